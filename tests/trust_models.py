"""Real pipelines whose dumps must load untrusted (DESIGN §5a), shared by the trust tests.

Each builder returns ``(step, inputs)`` for a fitted step; the step's outputs on
``inputs`` are what a fresh process must reproduce from the untrusted dump.
"""
import numpy as np


def _data(n=120, d=6, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    y = (X[:, 0] + X[:, 1] > 0).astype(int)
    return X, y


def demo_pipeline():
    from stepline.demo import build_pipeline, load_data, sample_hyperparams
    X, y, X_test, _ = load_data(0)
    pipeline = build_pipeline(0)
    samples, _ = sample_hyperparams(pipeline, X, y, 0)
    pipeline.set_hyperparams(samples)
    pipeline, _ = pipeline.fit_transform(X, y)
    return pipeline.set_train(False), X_test


def scaler_pca_logistic():
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from stepline import Pipeline
    from stepline.steps.sklearn import SKLearnWrapper
    X, y = _data()
    pipeline = Pipeline([SKLearnWrapper(StandardScaler()), SKLearnWrapper(PCA(n_components=3)),
                         SKLearnWrapper(LogisticRegression())], name="scaler_pca_logistic")
    return pipeline.fit(X, y), X


def random_forest():
    from sklearn.ensemble import RandomForestClassifier

    from stepline.steps.sklearn import SKLearnWrapper
    X, y = _data()
    step = SKLearnWrapper(RandomForestClassifier(n_estimators=5, random_state=0), name="forest")
    return step.fit(X, y), X


def feature_union():
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import MinMaxScaler

    from stepline.steps.numpy import MultiplyByN
    from stepline.steps.sklearn import SKLearnWrapper
    from stepline.steps.union import FeatureUnion
    X, y = _data()
    union = FeatureUnion([SKLearnWrapper(PCA(n_components=2)), SKLearnWrapper(MinMaxScaler()),
                          MultiplyByN(3)], name="union")
    return union.fit(X, y), X


def torch_step():
    import torch

    from stepline.torch import TorchStep
    X, y = _data()
    step = TorchStep(torch.nn.Linear, module_kwargs={"in_features": 6, "out_features": 1},
                     hyperparams={"epochs": 2, "seed": 0}, name="linear")
    return step.fit(X.astype(np.float32), y.astype(np.float32).reshape(-1, 1)), X.astype(np.float32)


BUILDERS = {"demo": demo_pipeline, "scaler_pca_logistic": scaler_pca_logistic, "random_forest": random_forest,
            "feature_union": feature_union, "torch": torch_step}
