"""FeatureUnion: same inputs to every branch, outputs joined in order, threads, joiner, saving."""
import threading

import numpy as np
import pytest

from conftest import Recorder, roundtrip
from stepline import Pipeline
from stepline.base import BaseStep, HandlerMixin, NonFittableMixin, NotFittedError
from stepline.steps.numpy import AddN, MultiplyByN, NumpyConcatenateInnerFeatures, NumpyRavel
from stepline.steps.union import FeatureUnion

rng = np.random.default_rng(0)
X = rng.normal(size=(50, 3))
Y = rng.normal(size=50)


class Center(BaseStep):
    def fit(self, data_inputs, expected_outputs=None):
        self.mean_ = np.mean(data_inputs, axis=0)
        return self

    def transform(self, data_inputs):
        return np.asarray(data_inputs) - self.mean_


class ProjectOnTarget(BaseStep):
    """Learns one least-squares weight vector from the expected outputs; outputs a 1-D prediction."""

    def fit(self, data_inputs, expected_outputs=None):
        self.coef_ = np.linalg.lstsq(data_inputs, expected_outputs, rcond=None)[0]
        return self

    def transform(self, data_inputs):
        return np.asarray(data_inputs) @ self.coef_


class Vandal(HandlerMixin, BaseStep):
    """A branch that overwrites its container's fields (as handlers may)."""

    def handle_fit(self, dc, context):
        return self

    def handle_transform(self, dc, context):
        dc.data_inputs = np.zeros((len(dc.data_inputs), 1))
        dc.expected_outputs = "vandalized"
        return dc

    def handle_fit_transform(self, dc, context):
        return self, self.handle_transform(dc, context)


class ThreadName(NonFittableMixin, BaseStep):
    def __init__(self, names, name=None):
        super().__init__(name=name)
        self.names = names

    def transform(self, data_inputs):
        self.names.append(threading.current_thread().name)
        return np.asarray(data_inputs)


def union_of_fitted_branches(n_jobs=None):
    return FeatureUnion([("c", Center()), ("p", ProjectOnTarget()), ("m", MultiplyByN(2))], n_jobs=n_jobs,
                        name="u")


def test_outputs_concatenated_on_last_axis_in_branch_order():
    u = FeatureUnion([("a", MultiplyByN(2)), ("b", AddN(1)), ("c", MultiplyByN(-1))])
    out = u.transform(X)
    assert out.shape == (50, 9)
    np.testing.assert_array_equal(out, np.concatenate([X * 2, X + 1, -X], axis=-1))
    assert u.keys() == ["a", "b", "c"] and len(u) == 3


def test_fits_every_branch_on_the_same_data():
    u = union_of_fitted_branches()
    u, out = u.fit_transform(X, Y)
    np.testing.assert_allclose(u["c"].mean_, X.mean(axis=0))
    np.testing.assert_allclose(u["p"].coef_, np.linalg.lstsq(X, Y, rcond=None)[0])
    assert out.shape == (50, 3 + 1 + 3)  # the 1-D prediction is one column
    np.testing.assert_allclose(out[:, 3], X @ u["p"].coef_)
    np.testing.assert_array_equal(u.transform(X), out)


def test_fitted_branches_returned_as_new_objects_keep_their_names():
    class Frozen(NonFittableMixin, BaseStep):
        def __init__(self, offset):
            super().__init__()
            self.offset = offset

        def transform(self, data_inputs):
            return np.asarray(data_inputs) - self.offset

    class LearnsOffset(BaseStep):
        def fit(self, data_inputs, expected_outputs=None):
            return Frozen(float(np.min(data_inputs)))

        def transform(self, data_inputs):
            raise AssertionError("never used after fit")

    for n_jobs in (None, 2):
        u = FeatureUnion([("a", LearnsOffset()), ("b", LearnsOffset())], n_jobs=n_jobs)
        u, out = u.fit_transform(X)
        assert u.keys() == ["a", "b"] and isinstance(u["b"], Frozen)
        np.testing.assert_array_equal(out, np.concatenate([X - X.min()] * 2, axis=-1))
        u = FeatureUnion([("a", LearnsOffset()), ("b", LearnsOffset())], n_jobs=n_jobs).fit(X + 1)
        assert u.keys() == ["a", "b"] and u["a"].offset == X.min() + 1
        u.teardown()


def test_fit_alone_fits_every_branch(log):
    u = FeatureUnion([Recorder(log, "a"), Recorder(log, "b")]).fit(X)
    assert sorted(e for e in log if e[1] == "fit") == [("a", "fit"), ("b", "fit")]
    assert ("a", "transform") not in log and u["a"].is_fitted and u["b"].is_fitted


def test_unfitted_branch_raises():
    with pytest.raises(NotFittedError):
        union_of_fitted_branches().transform(X)


def test_each_branch_gets_its_own_container():
    u = FeatureUnion([("v", Vandal()), ("m", MultiplyByN(3))])
    p = Pipeline([u, ("after", ProjectOnTarget())])
    p = p.fit(X, Y)  # 'after' would fail on the string if the vandal reached the shared container
    out = u.transform(X)
    np.testing.assert_array_equal(out[:, 0], 0.0)
    np.testing.assert_array_equal(out[:, 1:], X * 3)


def test_n_jobs_2_equals_n_jobs_none():
    sequential, _ = union_of_fitted_branches().fit_transform(X, Y)
    threaded, _ = union_of_fitted_branches(n_jobs=2).fit_transform(X, Y)
    np.testing.assert_array_equal(threaded.transform(X), sequential.transform(X))
    np.testing.assert_array_equal(threaded["p"].coef_, sequential["p"].coef_)
    threaded.teardown()


def test_n_jobs_runs_branches_in_pool_threads_made_by_setup():
    names = []
    u = FeatureUnion([ThreadName(names, "a"), ThreadName(names, "b")], n_jobs=2, name="tu")
    u.transform(X)
    assert len(names) == 2 and all(n.startswith("stepline-tu") for n in names)
    executor = u._executor
    assert executor is not None
    u.teardown()
    assert u._executor is None and executor._shutdown
    names.clear()
    FeatureUnion([ThreadName(names, "a"), ThreadName(names, "b")]).transform(X)
    assert names == [threading.current_thread().name] * 2


def test_n_jobs_branch_error_propagates():
    class Boom(NonFittableMixin, BaseStep):
        def transform(self, data_inputs):
            raise RuntimeError("branch failed")

    u = FeatureUnion([MultiplyByN(2), Boom()], n_jobs=2)
    with pytest.raises(RuntimeError, match="branch failed"):
        u.transform(X)
    u.teardown()


def test_bad_n_jobs_and_empty_union_refused():
    with pytest.raises(ValueError, match="n_jobs"):
        FeatureUnion([MultiplyByN(2)], n_jobs=0)
    with pytest.raises(ValueError, match="at least one"):
        FeatureUnion([])


def test_joiner_step_receives_the_outputs_list():
    class Stack(NonFittableMixin, BaseStep):
        def transform(self, data_inputs):
            return np.stack(data_inputs)

    u = FeatureUnion([MultiplyByN(2), AddN(1)], joiner=Stack())
    out = u.transform(X)
    assert out.shape == (2, 50, 3)
    np.testing.assert_array_equal(out[1], X + 1)
    assert u.joiner.name == "joiner" and u.get_children()[-1] is u.joiner and u.keys() == ["MultiplyByN", "AddN"]


def test_fittable_joiner_is_fitted_on_branch_outputs():
    class Weighted(BaseStep):
        def fit(self, data_inputs, expected_outputs=None):
            self.n_ = len(data_inputs)
            return self

        def transform(self, data_inputs):
            return sum(data_inputs) / self.n_

    u = FeatureUnion([MultiplyByN(2), MultiplyByN(4)], joiner=Weighted()).fit(X)
    assert u.joiner.n_ == 2
    np.testing.assert_allclose(u.transform(X), X * 3)


def test_joiner_hyperparams_route_and_default_joiner_step_equivalent():
    u = FeatureUnion([("a", MultiplyByN(2))], joiner=NumpyConcatenateInnerFeatures())
    np.testing.assert_array_equal(u.transform(X), FeatureUnion([("a", MultiplyByN(2))]).transform(X))
    scaled = FeatureUnion([("a", MultiplyByN(2))], joiner=MultiplyByN(1))
    scaled.set_hyperparams({"joiner__multiply_by": 3, "a__multiply_by": 5})
    assert scaled.get_hyperparams() == {"a__multiply_by": 5, "joiner__multiply_by": 3}
    np.testing.assert_allclose(scaled.transform(X), [X * 15])
    with pytest.raises(TypeError, match="joiner"):
        FeatureUnion([MultiplyByN(2)], joiner=np.concatenate)
    with pytest.raises(ValueError, match="joiner"):
        FeatureUnion([("j", MultiplyByN(2))], joiner=NumpyRavel(name="j"))


def test_hyperparams_route_into_branches():
    p = Pipeline([("u", FeatureUnion([("a", MultiplyByN(2)), ("b", AddN(1))]))])
    p.set_hyperparams({"u__a__multiply_by": 5, "u__b": {"add": 10}})
    np.testing.assert_array_equal(p.transform(X), np.concatenate([X * 5, X + 10], axis=-1))
    assert p.get_hyperparams() == {"u__a__multiply_by": 5, "u__b__add": 10}


def test_mismatched_branch_rows_are_reported():
    class Half(NonFittableMixin, BaseStep):
        def transform(self, data_inputs):
            return data_inputs[::2]

    with pytest.raises(ValueError, match="shapes differ"):
        FeatureUnion([MultiplyByN(2), Half()]).transform(X)


def test_union_in_a_pipeline_saves_and_loads(tmp_path):
    p = Pipeline([("u", union_of_fitted_branches(n_jobs=2)), ("after", ProjectOnTarget())], name="union_pipe")
    p = p.fit(X, Y)
    loaded = roundtrip(p, tmp_path, X)
    assert loaded["u"].n_jobs == 2 and loaded["u"].keys() == ["c", "p", "m"]
    assert loaded["u"]._executor is not None  # the loaded union's setup made its own pool
    live_pool = p["u"]._executor
    assert live_pool is not None and not live_pool._shutdown  # saving left the live pool alone
    loaded.teardown()
    p.teardown()
    assert live_pool._shutdown


def test_union_with_joiner_saves_and_loads(tmp_path):
    u = FeatureUnion([("c", Center()), ("m", MultiplyByN(2))], joiner=NumpyConcatenateInnerFeatures(), name="uj")
    u = u.fit(X)
    loaded = roundtrip(u, tmp_path, X)
    assert isinstance(loaded.joiner, NumpyConcatenateInnerFeatures) and loaded.joiner.name == "joiner"
    assert (tmp_path / "uj" / "joiner").is_dir() and (tmp_path / "uj" / "c").is_dir()
