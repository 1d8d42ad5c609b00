"""A Neuraxle 0.8 script ported by renaming ``neuraxle`` to ``stepline`` in its imports.

It uses Neuraxle's handler hooks, data containers, unions, minibatch barriers, a
DataFrame, a raw scikit-learn classifier, and checks a custom step with the conformance
kit.
"""
import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression

from stepline.base import BaseStep, ExecutionContext as CX, NonFittableMixin
from stepline.data_container import DataContainer as DACT
from stepline.pipeline import Joiner, MiniBatchSequentialPipeline, Pipeline
from stepline.steps.column_transformer import ColumnSelector2D
from stepline.steps.data import DataShuffler
from stepline.steps.numpy import MultiplyByN
from stepline.testing import check_step
from stepline.union import AddFeatures


class Doubler(NonFittableMixin, BaseStep):
    """Written as Neuraxle steps often are: a handler hook instead of transform."""

    def _transform_data_container(self, data_container: DACT, context: CX) -> DACT:
        data_container.di = np.asarray(data_container.di) * 2
        return data_container


def main():
    dact = Pipeline([Doubler()]).handle_transform(DACT(di=[1, 2, 3]), CX())
    print("hooks:", dact.di.tolist(), "ids:", dact.ids)

    barriers = MiniBatchSequentialPipeline([MultiplyByN(2), Joiner(batch_size=4), MultiplyByN(3)])
    print("minibatches:", barriers.transform(list(range(8))).tolist())

    frame = pd.DataFrame({"age": [31, 45, 22, 60, 38, 27], "income": [40, 85, 20, 90, 60, 30]},
                         index=["ann", "bob", "cid", "dee", "eve", "fay"])
    target = np.array([0, 1, 0, 1, 1, 0])
    shuffled = Pipeline([DataShuffler(seed=0), ColumnSelector2D(["income"])]).fit_transform(frame, target)[1]
    print("shuffled rows keep their index:", list(shuffled.index))

    model = Pipeline([AddFeatures([MultiplyByN(0.01)]), ("clf", LogisticRegression())]).fit(frame.values, target)
    print("classes:", model.classes_.tolist(), "probas:", model.predict_proba(frame.values[:2]).round(2).tolist())

    print("check_step:", check_step(Doubler(), fresh_process=False))


if __name__ == "__main__":
    main()
