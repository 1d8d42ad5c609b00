"""Tune the demo's pipeline with Optuna: a resumable search, its report, its plot, the best dump.

The pipeline of ``stepline demo`` and of Neuraxle's "Step Saving & Lifecycle" page
(``TrainOnlyWrapper(DataShuffler())``, ``OutputTransformerWrapper(NumpyRavel())``,
``SKLearnWrapper(LogisticRegression(), space)``) declares its space once; ``AutoML``
searches it on scikit-learn's breast cancer data with 3-fold cross-validation, records
every trial in an SQLite file (run the same call again and it resumes), writes the
optimisation history as a PNG and saves the refit best pipeline
as a stepline dump, loaded back here to check its predictions.
Run: ``python examples/automl_search.py`` (needs ``pip install 'stepline[sklearn,automl]'``).
"""
import logging
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
from sklearn.datasets import load_breast_cancer

from stepline import CX
from stepline.automl import AutoML
from stepline.demo import build_pipeline

# scikit-learn 1.8 deprecates `penalty`, and liblinear warns when max_iter stops it early
warnings.filterwarnings("ignore", module="sklearn")
logging.getLogger("stepline.automl").setLevel(logging.ERROR)  # failed trials are in the report


def main():
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    X, y = load_breast_cancer(return_X_y=True)
    X = X / X.max(axis=0)
    work = Path(tempfile.mkdtemp(prefix="stepline-automl-example-"))
    try:
        search = AutoML(build_pipeline(seed=0), scoring="accuracy", cv=3, n_trials=8, seed=0,
                        storage=work / "search.db", save_best_to=work / "best", show_progress=False)
        search.fit(X, y)
        print("best params:", search.best_params_)
        print(f"best cross-validated accuracy: {search.best_score_:.4f}")
        print(search.report(top=5))
        print("history plot:", search.plot_history(work / "history.png").name)

        resumed = AutoML(build_pipeline(seed=0), scoring="accuracy", cv=3, n_trials=10, seed=0,
                         storage=work / "search.db", show_progress=False).fit(X, y)
        print(f"resumed the study: {len(resumed.study_.trials)} trials recorded, "
              f"{sum(t.state.name == 'COMPLETE' for t in resumed.study_.trials)} complete")

        loaded = CX(work / "best").load("demo_pipeline")
        same = np.array_equal(loaded.predict(X), search.predict(X))
        print("loaded best pipeline predicts the same:", same)
        assert same
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
