"""Framework overhead: ``transform`` of a 10-step pipeline of trivial steps on a tiny array.

Compares stepline's ``Pipeline`` with scikit-learn's ``Pipeline`` of trivial
transformers and with a plain Python loop over the same functions, in one run.
Target (issue 2): stepline's per-call time at most 1/5 of scikit-learn's.

    python benchmarks/bench_overhead.py [--steps 10] [--repeats 15]
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _timing import median_time, print_table  # noqa: E402

from stepline import Pipeline  # noqa: E402
from stepline.base import BaseStep, NonFittableMixin  # noqa: E402


def add_one(x):
    return x + 1


class AddOne(NonFittableMixin, BaseStep):
    def transform(self, data_inputs):
        return data_inputs + 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    from sklearn.base import BaseEstimator, TransformerMixin
    from sklearn.pipeline import Pipeline as SkPipeline

    class SkAddOne(TransformerMixin, BaseEstimator):
        def fit(self, X, y=None):
            self.fitted_ = True  # scikit-learn's check_is_fitted looks for a trailing-underscore attribute
            return self

        def transform(self, X):
            return X + 1

    x = np.ones((4, 3))
    ours = Pipeline([AddOne() for _ in range(args.steps)])
    ours.transform(x)  # first call sets the steps up
    theirs = SkPipeline([(f"s{i}", SkAddOne()) for i in range(args.steps)]).fit(x)
    functions = [add_one] * args.steps

    def plain_loop():
        out = x
        for fn in functions:
            out = fn(out)
        return out

    assert np.array_equal(ours.transform(x), theirs.transform(x))
    number = 2000
    rows = [
        ("plain Python loop", median_time(plain_loop, args.repeats, number)),
        ("stepline Pipeline", median_time(lambda: ours.transform(x), args.repeats, number)),
        ("scikit-learn Pipeline", median_time(lambda: theirs.transform(x), args.repeats, number)),
    ]
    print_table(f"transform of a {args.steps}-step pipeline of trivial steps on a (4, 3) array",
                rows, "scikit-learn Pipeline")
    t = dict(rows)
    overhead = (t["stepline Pipeline"] - t["plain Python loop"]) / args.steps
    print(f"\n  stepline / scikit-learn: {t['stepline Pipeline'] / t['scikit-learn Pipeline']:.3f} (target ≤ 0.200)")
    print(f"  stepline framework overhead per step: {overhead * 1e6:.2f} µs (target ≈ 1 µs or less)")


if __name__ == "__main__":
    main()
