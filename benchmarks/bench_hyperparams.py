"""``set_hyperparams`` of a flat dict on a pipeline of 100 steps (target: under 1 ms).

Also times ``get_hyperparams`` and, as a peer, scikit-learn's ``Pipeline.set_params``
on 100 trivial estimators with the same flat keys, in the same run.

    python benchmarks/bench_hyperparams.py [--steps 100] [--repeats 15]
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from _timing import median_time, print_table  # noqa: E402

from stepline import Pipeline  # noqa: E402
from stepline.base import BaseStep, NonFittableMixin  # noqa: E402


class Scale(NonFittableMixin, BaseStep):
    def __init__(self, name):
        super().__init__(hyperparams={"factor": 1.0, "offset": 0.0}, name=name)

    def transform(self, data_inputs):
        return data_inputs * self.hyperparams["factor"] + self.hyperparams["offset"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    from sklearn.base import BaseEstimator
    from sklearn.pipeline import Pipeline as SkPipeline

    class SkScale(BaseEstimator):
        def __init__(self, factor=1.0, offset=0.0):
            self.factor, self.offset = factor, offset

        def fit(self, X, y=None):
            return self

        def transform(self, X):
            return X

    pipeline = Pipeline([Scale(f"s{i}") for i in range(args.steps)])
    flat = {f"s{i}__factor": 2.0 for i in range(args.steps)}
    sk = SkPipeline([(f"s{i}", SkScale()) for i in range(args.steps)])
    rows = [
        ("stepline set_hyperparams", median_time(lambda: pipeline.set_hyperparams(flat), args.repeats, 50)),
        ("stepline get_hyperparams", median_time(pipeline.get_hyperparams, args.repeats, 50)),
        ("scikit-learn set_params", median_time(lambda: sk.set_params(**flat), args.repeats, 50)),
    ]
    print_table(f"flat dict of {args.steps} keys on a {args.steps}-step pipeline", rows, "scikit-learn set_params")
    ours = dict(rows)["stepline set_hyperparams"]
    print(f"\n  stepline set_hyperparams: {ours * 1e3:.3f} ms (target < 1 ms)")


if __name__ == "__main__":
    main()
