"""stepline's ``SKLearnWrapper`` pipeline against the same scikit-learn ``Pipeline``, in one run.

StandardScaler → PCA → LogisticRegression, fitted once, then ``predict`` (the whole
pipeline) and ``transform`` (StandardScaler → PCA) on 1 row and on 100 000 rows, each
as stepline ``Pipeline([SKLearnWrapper(...), ...])``, as scikit-learn's ``Pipeline``,
and as a plain loop calling the same fitted estimators (no framework at all). Each
timing is the median over ``--repeats`` rounds; the rounds of the three contenders
are interleaved, and a 1-row round is the mean of ``--number`` calls. A last table times
the frameworks alone (three do-nothing estimators), where scikit-learn's per-call work
does not drown the per-step overhead. Ratios are
stepline / scikit-learn. BLAS runs single-threaded by default (``--threads``), so the
comparison measures the frameworks rather than a thread pool's contention.

Targets (issue 5): on 100 000 rows at most 1.1× scikit-learn; on 1 row faster than
scikit-learn (framework overhead about 1 µs per step).

    python benchmarks/bench_sklearn.py [--rows 100000] [--features 20] [--repeats 15] [--number 2000]
                                       [--threads 1]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time


def _threads_from_argv() -> str:
    """``--threads`` must act before NumPy loads its BLAS, so it is read here."""
    for i, arg in enumerate(sys.argv):
        if arg == "--threads" and i + 1 < len(sys.argv):
            return sys.argv[i + 1]
        if arg.startswith("--threads="):
            return arg.split("=", 1)[1]
    return "1"


for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = _threads_from_argv()

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from _timing import fmt_seconds, print_table  # noqa: E402

from stepline import Pipeline  # noqa: E402
from stepline.steps.sklearn import SKLearnWrapper  # noqa: E402


def interleaved_medians(contenders: dict, repeats: int, number: int) -> dict:
    """``{label: median seconds per call}``, the contenders' rounds interleaved."""
    for fn in contenders.values():
        fn()  # warm up
    rounds: dict = {label: [] for label in contenders}
    for r in range(repeats):
        items = list(contenders.items())
        items = items[r % len(items):] + items[:r % len(items)]  # rotate who goes first
        for label, fn in items:
            start = time.perf_counter()
            for _ in range(number):
                fn()
            rounds[label].append((time.perf_counter() - start) / number)
    return {label: statistics.median(times) for label, times in rounds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--features", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--number", type=int, default=2000, help="calls per 1-row round")
    parser.add_argument("--big-number", type=int, default=3, help="calls per round on --rows rows")
    parser.add_argument("--threads", default="1", help="BLAS/OpenMP threads (default 1)")
    args = parser.parse_args()

    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline as SkPipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    X = rng.normal(size=(args.rows, args.features))
    y = (X[:, 0] + 0.5 * X[:, 1] + rng.normal(scale=0.5, size=args.rows) > 0).astype(int)
    X_fit, y_fit = X[:5000], y[:5000]

    def estimators():
        return StandardScaler(), PCA(n_components=10, random_state=0), LogisticRegression(max_iter=500)

    scaler, pca, logreg = estimators()
    ours = Pipeline([SKLearnWrapper(scaler), SKLearnWrapper(pca), SKLearnWrapper(logreg)]).fit(X_fit, y_fit)
    theirs = SkPipeline(list(zip(("scaler", "pca", "logreg"), estimators()))).fit(X_fit, y_fit)
    ours_pre, theirs_pre = ours[:-1], theirs[:-1]

    def plain_predict(x):
        return logreg.predict(pca.transform(scaler.transform(x)))

    def plain_transform(x):
        return pca.transform(scaler.transform(x))

    np.testing.assert_array_equal(ours.predict(X), theirs.predict(X))
    np.testing.assert_allclose(ours_pre.transform(X), theirs_pre.transform(X))

    one = X[:1]
    print(f"StandardScaler → PCA(10) → LogisticRegression, {args.features} features; "
          f"medians of {args.repeats} interleaved rounds")
    results = {}
    for what in ("predict", "transform"):
        for rows, x, number in ((1, one, args.number), (args.rows, X, args.big_number)):
            if what == "predict":
                contenders = {"plain calls (no framework)": lambda x=x: plain_predict(x),
                              "stepline Pipeline": lambda x=x: ours.predict(x),
                              "scikit-learn Pipeline": lambda x=x: theirs.predict(x)}
            else:
                contenders = {"plain calls (no framework)": lambda x=x: plain_transform(x),
                              "stepline Pipeline": lambda x=x: ours_pre.transform(x),
                              "scikit-learn Pipeline": lambda x=x: theirs_pre.transform(x)}
            t = interleaved_medians(contenders, args.repeats, number)
            results[(what, rows)] = t
            print_table(f"{what} on {rows:,} row{'s' if rows > 1 else ''}", list(t.items()),
                        "scikit-learn Pipeline")

    # The framework alone: the same three-step shapes around estimators that do nothing,
    # so the per-step cost of Pipeline + SKLearnWrapper is not lost in scikit-learn's noise.
    from sklearn.base import BaseEstimator, TransformerMixin

    class Nothing(TransformerMixin, BaseEstimator):
        def fit(self, X, y=None):
            self.fitted_ = True
            return self

        def transform(self, X):
            return X

    nothing = [Nothing().fit(one) for _ in range(3)]
    bare = Pipeline([SKLearnWrapper(e) for e in nothing]).fit(one)
    theirs_bare = SkPipeline([(f"n{i}", Nothing()) for i in range(3)]).fit(one)

    def plain_nothing():
        x = one
        for e in nothing:
            x = e.transform(x)
        return x

    t = interleaved_medians({"plain calls (no framework)": plain_nothing,
                             "stepline Pipeline": lambda: bare.transform(one),
                             "scikit-learn Pipeline": lambda: theirs_bare.transform(one)},
                            args.repeats, args.number * 10)
    print_table("framework alone: transform of 3 do-nothing estimators, 1 row", list(t.items()),
                "scikit-learn Pipeline")
    framework = {name: (t[name] - t["plain calls (no framework)"]) / 3
                 for name in ("stepline Pipeline", "scikit-learn Pipeline")}

    print("\nsummary (stepline / scikit-learn; targets: ≤ 1.100 on "
          f"{args.rows:,} rows, < 1.000 on 1 row)")
    for (what, rows), t in results.items():
        ratio = t["stepline Pipeline"] / t["scikit-learn Pipeline"]
        verdict = "ok" if (ratio <= 1.1 if rows > 1 else ratio < 1.0) else "MISSED"
        print(f"  {what:<9} {rows:>7,} rows: {ratio:6.3f}  [{verdict}]")
    print("  framework overhead per step (do-nothing estimators): "
          f"stepline {fmt_seconds(framework['stepline Pipeline']).strip()}, "
          f"scikit-learn {fmt_seconds(framework['scikit-learn Pipeline']).strip()}")


if __name__ == "__main__":
    main()
