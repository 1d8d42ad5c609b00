"""DaskPipeline against Dask's own way of shipping a pipeline, on a local 2-worker cluster.

A fitted scikit-learn pipeline (StandardScaler -> PCA -> LogisticRegression, wrapped in
stepline steps) predicts ``--rows`` rows in minibatches of ``--batch-size``:

  - here, in this process (the reference);
  - through ``DaskPipeline`` (the step shipped once as a stepline dump, loaded and set up
    once per worker);
  - through plain Dask: the same pipeline object scattered to the workers with
    ``client.scatter(..., broadcast=True)`` (Dask's pickle) and ``client.map`` over the
    same minibatches.

Steady state (second and later calls) and the first call after a change (shipping the
step) are timed apart; medians over ``--repeats``. On a 2-core machine the cluster's 2
workers share the cores with this process, so the ratio to running here mostly shows the
cost of moving data; the comparison that matters is against plain Dask.

    python benchmarks/bench_dask.py [--rows 200000] [--batch-size 20000] [--repeats 5]
"""
from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import time
import warnings

import numpy as np
from distributed import Client, LocalCluster
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

sys.path.insert(0, os.path.dirname(__file__))
from _timing import fmt_seconds  # noqa: E402

from stepline import Pipeline  # noqa: E402
from stepline.distributed.dask import DaskPipeline  # noqa: E402
from stepline.steps.sklearn import SKLearnWrapper  # noqa: E402


def build() -> Pipeline:
    return Pipeline([SKLearnWrapper(StandardScaler()), SKLearnWrapper(PCA(10)),
                     SKLearnWrapper(LogisticRegression(max_iter=500))])


def _predict(pipeline, batch):
    return pipeline.predict(batch)


def plain_dask(client, pipeline, batches):
    shipped = client.scatter(pipeline, broadcast=True, hash=False)
    return shipped, lambda: np.concatenate(client.gather(client.map(_predict, [shipped] * len(batches), batches,
                                                                    pure=False)))


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--batch-size", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message=".*large graph.*")  # both engines send the same minibatches
    rng = np.random.default_rng(0)
    X = rng.normal(size=(args.rows, 20))
    y = (X[:, 0] + X[:, 1] > 0).astype(int)
    pipeline = build().fit(X, y)
    batches = [X[i:i + args.batch_size] for i in range(0, len(X), args.batch_size)]
    expected = pipeline.predict(X)

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=":0", silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
        steady = {"here (this process)": [], "DaskPipeline": [], "plain Dask (scattered pickle)": []}
        first = {"DaskPipeline": [], "plain Dask (scattered pickle)": []}
        for _ in range(args.repeats):
            with DaskPipeline(pipeline, batch_size=args.batch_size, client=client) as ours:
                first["DaskPipeline"].append(timed(lambda: ours.predict(X)))
                steady["DaskPipeline"].append(timed(lambda: ours.predict(X)))
                assert np.array_equal(ours.predict(X), expected)
            start = time.perf_counter()
            shipped, run = plain_dask(client, pipeline, batches)
            run()
            first["plain Dask (scattered pickle)"].append(time.perf_counter() - start)
            steady["plain Dask (scattered pickle)"].append(timed(run))
            client.cancel(shipped)
            steady["here (this process)"].append(timed(lambda: pipeline.predict(X)))

    print(f"{args.rows} rows x 20 features in minibatches of {args.batch_size} "
          f"({len(batches)} tasks), 2 worker processes, medians of {args.repeats}")
    ref = statistics.median(steady["plain Dask (scattered pickle)"])
    print("\nsteady state (the step already on the workers)")
    for label, times in steady.items():
        t = statistics.median(times)
        print(f"  {label:<32} {fmt_seconds(t)}   {t / ref:6.2f}× plain Dask")
    ref_first = statistics.median(first["plain Dask (scattered pickle)"])
    print("\nfirst call (ship the step, load it on each worker, then predict)")
    for label, times in first.items():
        t = statistics.median(times)
        print(f"  {label:<32} {fmt_seconds(t)}   {t / ref_first:6.2f}× plain Dask")


if __name__ == "__main__":
    main()
