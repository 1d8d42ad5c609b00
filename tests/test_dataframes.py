"""pandas DataFrames keep their index and columns through the steps that reorder or join rows;
scikit-learn habits on pipelines (predict_proba, score, classes_, raw estimators)."""
import json

import numpy as np
import pytest

pd = pytest.importorskip("pandas")

from stepline.base import ExecutionContext, Identity  # noqa: E402
from stepline.pipeline import MiniBatchSequentialPipeline, Pipeline  # noqa: E402
from stepline.steps.column_transformer import ColumnSelector2D, ColumnTransformer, SelectColumns  # noqa: E402
from stepline.steps.data import DataShuffler  # noqa: E402
from stepline.steps.data import MiniBatchSequentialPipeline as PlainMiniBatchPipeline  # noqa: E402
from stepline.steps.union import FeatureUnion  # noqa: E402

FRAME = pd.DataFrame({"a": range(7), "b": np.arange(7) * 10.0, "c": list("pqrstuv")}, index=list("ABCDEFG"))
TARGET = pd.Series(range(7), index=FRAME.index, name="y")


def test_data_shuffler_keeps_index_and_rows_together():
    _, out = Pipeline([DataShuffler(seed=3)]).fit_transform(FRAME, TARGET)
    assert isinstance(out, pd.DataFrame) and list(out.columns) == ["a", "b", "c"]
    assert sorted(out.index) == list(FRAME.index) and list(out.index) != list(FRAME.index)
    assert out.equals(FRAME.loc[out.index])


def test_data_shuffler_shuffles_expected_outputs_with_the_rows():
    from stepline.data_container import DACT
    _, dc = DataShuffler(seed=3).handle_fit_transform(DACT(di=FRAME, eo=TARGET), ExecutionContext())
    assert list(dc.expected_outputs.index) == list(dc.data_inputs.index)


@pytest.mark.parametrize("pipeline_class", [MiniBatchSequentialPipeline, PlainMiniBatchPipeline])
def test_minibatch_pipelines_keep_the_frame(pipeline_class):
    out = pipeline_class([Identity()], batch_size=3).transform(FRAME)
    assert out.equals(FRAME)


def test_feature_union_joins_frames_side_by_side():
    out = FeatureUnion([SelectColumns(["a"]), SelectColumns(["a", "b"])]).transform(FRAME)
    assert list(out.columns) == ["a", "a_1", "b"] and list(out.index) == list(FRAME.index)


def test_streaming_union_joins_frames_side_by_side():
    from stepline.distributed.streaming import ParallelQueuedFeatureUnion
    out = ParallelQueuedFeatureUnion([SelectColumns(["a"]), SelectColumns(["b"])], batch_size=3,
                                     use_processes=False).transform(FRAME)
    assert list(out.columns) == ["a", "b"] and list(out.index) == list(FRAME.index)


def test_select_columns_by_name_or_position():
    assert list(ColumnSelector2D(["c", "a"]).transform(FRAME).columns) == ["c", "a"]
    assert list(ColumnSelector2D(1).transform(FRAME).columns) == ["b"]
    assert list(ColumnSelector2D(slice(0, 2)).transform(FRAME).index) == list(FRAME.index)
    with pytest.raises(KeyError, match=r"no column named \['z'\].*\['a', 'b', 'c'\]"):
        ColumnSelector2D(["z"]).transform(FRAME)
    assert ColumnSelector2D([0, 2]).transform(np.arange(12).reshape(3, 4)).tolist() == [[0, 2], [4, 6], [8, 10]]


def test_column_transformer_per_column_group():
    from stepline.steps.numpy import MultiplyByN
    data = np.arange(12.0).reshape(3, 4)
    out = ColumnTransformer([(0, MultiplyByN(2)), ([2, 3], MultiplyByN(10))]).transform(data)
    assert out.tolist() == [[0, 20, 30], [8, 60, 70], [16, 100, 110]]


def test_manifest_records_the_pandas_version(tmp_path):
    Pipeline([Identity()]).set_name("p").save(ExecutionContext(tmp_path), full_dump=True)
    manifests = [json.loads(p.read_text()) for p in tmp_path.rglob("*.json")]
    versions = [m.get("versions") or m.get("runtime") or {} for m in manifests]
    assert any(v.get("pandas") == pd.__version__ for v in versions), manifests[0].keys()


# ------------------------------------------------------------------ scikit-learn habits
sklearn = pytest.importorskip("sklearn")
from sklearn.cluster import KMeans  # noqa: E402
from sklearn.linear_model import LinearRegression, LogisticRegression  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from stepline.steps.sklearn import SKLearnWrapper  # noqa: E402

X = np.random.default_rng(0).normal(size=(40, 3))
Y = (X[:, 0] > 0).astype(int)


def test_pipeline_ending_in_a_classifier_has_its_methods():
    p = Pipeline([StandardScaler(), ("clf", LogisticRegression())]).fit(X, Y)
    assert isinstance(p["StandardScaler"], SKLearnWrapper)  # raw estimators are wrapped
    assert p.predict_proba(X[:5]).shape == (5, 2) and list(p.classes_) == [0, 1]
    assert p.score(X, Y) > 0.8 and p.decision_function(X[:2]).shape == (2,)
    assert np.allclose(p.predict_proba(X), p["clf"].wrapped_sklearn_predictor.predict_proba(
        p["StandardScaler"].transform(X)))


def test_methods_the_final_estimator_lacks_are_absent():
    p = Pipeline([StandardScaler(), LinearRegression()]).fit(X, X[:, 0])
    assert not hasattr(p, "predict_proba") and not hasattr(p, "classes_")
    assert p.score(X, X[:, 0]) > 0.99  # R² for a regressor


def test_wrapped_predictor_predicts():
    km = SKLearnWrapper(KMeans(2, n_init=2, random_state=0)).fit(X)
    assert set(np.unique(km.transform(X))) <= {0, 1}  # labels, not distances
    assert SKLearnWrapper(StandardScaler()).fit(X).transform(X).shape == X.shape
