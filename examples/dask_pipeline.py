"""Fit here, predict on a Dask cluster: the pipeline travels as a stepline dump.

Starts a private two-worker LocalCluster on 127.0.0.1 (pass a scheduler address to use a
real cluster: ``DaskPipeline(steps, batch_size, address="tcp://host:8786")``).

    python examples/dask_pipeline.py      # needs pip install 'stepline[sklearn,dask]'
"""
import logging

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from stepline import Pipeline
from stepline.base import BaseStep, NonFittableMixin
from stepline.distributed.dask import DaskPipeline
from stepline.steps.sklearn import SKLearnWrapper


class Clip(NonFittableMixin, BaseStep):
    """Defined in this script's __main__: the workers get it by value, inside the dump."""

    def transform(self, data_inputs):
        return np.clip(data_inputs, -3.0, 3.0)


def build() -> Pipeline:
    return Pipeline([Clip(), SKLearnWrapper(StandardScaler()), SKLearnWrapper(LogisticRegression())])


def main():
    logging.basicConfig(level=logging.WARNING)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(5_000, 8))
    y = (X[:, 0] - X[:, 3] > 0).astype(int)
    local = build().fit(X, y)
    with DaskPipeline(build(), batch_size=500, n_workers=2) as remote:
        remote = remote.fit(X, y)          # fitted in this process
        predicted = remote.predict(X)      # 10 minibatches on 2 workers, back in order
    same = np.array_equal(predicted, local.predict(X))
    print(f"predicted {len(predicted)} rows on the cluster; same as here: {same}")
    assert same


if __name__ == "__main__":
    main()
