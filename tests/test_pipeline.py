"""Pipelines: naming, the mapping API, slicing, nesting, data flow, errors."""
import numpy as np
import pytest

from conftest import Recorder
from stepline import CX, Pipeline
from stepline.base import (BaseStep, DataContainer, DuplicateStepNameError, HandlerMixin, Identity,
                           InvalidStepNameError, MetaStep)


def test_names_bare_and_given_made_unique():
    p = Pipeline([Identity(), Identity(), ("x", Identity()), Identity(name="given")])
    assert p.keys() == ["Identity", "Identity_1", "x", "given"]


def test_default_name_suffix_avoids_explicit_names():
    p = Pipeline([("Identity", Identity()), Identity()])
    assert p.keys() == ["Identity", "Identity_1"]


def test_duplicate_explicit_name_refused():
    with pytest.raises(DuplicateStepNameError, match="'a'"):
        Pipeline([("a", Identity()), ("a", Identity())])


def test_same_step_object_twice_refused():
    s = Identity()
    with pytest.raises(ValueError, match="appears twice"):
        Pipeline([s, s])


@pytest.mark.parametrize("bad", ["", "a/b", "a\\b", "a__b", ".hidden", " x", 3])
def test_bad_names_refused(bad):
    with pytest.raises(InvalidStepNameError):
        Identity(name=bad)
    with pytest.raises(InvalidStepNameError):
        Identity().set_name(bad)


def test_mapping_api():
    a, b, c = Identity(name="a"), Identity(name="b"), Identity(name="c")
    p = Pipeline([a, b, c])
    assert p["b"] is b and p[0] is a and p[-1] is c
    assert len(p) == 3 and "b" in p and "zz" not in p
    assert p.values() == [a, b, c] and p.items() == [("a", a), ("b", b), ("c", c)]
    assert list(p) == ["a", "b", "c"]
    with pytest.raises(KeyError, match="'zz'"):
        p["zz"]


def test_slice_is_a_pipeline_of_the_same_steps(log):
    p = Pipeline([Recorder(log, "a", factor=2), Recorder(log, "b", factor=3)], name="p")
    p = p.fit(np.ones(2))
    sub = p[1:]
    assert isinstance(sub, Pipeline) and sub.keys() == ["b"] and sub["b"] is p["b"]
    np.testing.assert_array_equal(sub.transform(np.ones(2)), [3.0, 3.0])
    assert p.keys() == ["a", "b"]


def test_nested_pipeline_transform_chains(log):
    p = Pipeline([Recorder(log, "a", factor=2), ("inner", Pipeline([Recorder(log, "b", factor=5)]))])
    p, out = p.fit_transform(np.ones(3))
    np.testing.assert_array_equal(out, np.full(3, 10.0))
    np.testing.assert_array_equal(p.transform(np.ones(1)), [10.0])
    np.testing.assert_array_equal(p.predict(np.ones(1)), [10.0])


def test_empty_pipeline_passes_through():
    assert Pipeline([]).transform([1, 2]) == [1, 2]


def test_repr_shows_tree_and_hyperparams(log):
    p = Pipeline([Recorder(log, "a", factor=7), ("inner", Pipeline([Identity()]))], name="root")
    text = repr(p)
    assert "Pipeline(name='root'" in text and "Recorder(name='a', hyperparams={'factor': 7})" in text
    assert "    Pipeline(name='inner'" in text and "        Identity(name='Identity')" in text


def test_plain_steps_never_see_the_container():
    seen = []

    class Plain(BaseStep):
        def fit(self, data_inputs, expected_outputs=None):
            seen.append((type(data_inputs), type(expected_outputs)))
            return self

        def transform(self, data_inputs):
            seen.append(type(data_inputs))
            return data_inputs

    Pipeline([Plain()]).fit_transform(np.ones(2), np.zeros(2))
    assert seen == [(np.ndarray, np.ndarray), np.ndarray]


def test_handler_step_sees_expected_outputs_and_context():
    class SwapOutputs(HandlerMixin, BaseStep):
        def handle_transform(self, dc, context):
            assert isinstance(dc, DataContainer) and context.get_names() == ["outer"]
            dc.data_inputs, dc.expected_outputs = dc.expected_outputs, dc.data_inputs
            return dc

        def handle_fit_transform(self, dc, context):
            return self, self.handle_transform(dc, context)

        def handle_fit(self, dc, context):
            return self

    p = Pipeline([SwapOutputs()], name="outer")
    _, out = p.fit_transform(np.ones(2), np.zeros(2))
    np.testing.assert_array_equal(out, np.zeros(2))


def test_meta_step_delegates_and_exposes_wrapped(log):
    inner = Recorder(log, "r", factor=4)
    meta = MetaStep(inner, name="meta")
    assert meta.wrapped is inner and meta.get_children() == (inner,)
    meta, out = meta.fit_transform(np.ones(2))
    np.testing.assert_array_equal(out, [4.0, 4.0])
    assert meta.get_hyperparams() == {"r__factor": 4}


def test_meta_step_refuses_non_steps():
    with pytest.raises(TypeError, match="wraps a step"):
        MetaStep(object())


def test_pipeline_refuses_non_steps():
    with pytest.raises(TypeError, match="takes steps"):
        Pipeline([lambda x: x])


def test_append_and_cache_folder(tmp_path):
    p = Pipeline([Identity()], cache_folder=tmp_path)
    p.append(Identity())
    assert p.keys() == ["Identity", "Identity_1"] and p.cache_folder == tmp_path


def test_context_paths_and_lazy_temp_root(tmp_path):
    cx = CX()
    assert cx._root._path is None  # no folder made until needed
    p = Pipeline([Identity(name="a")], name="p")
    child = cx.push(p)
    assert child.get_names() == ["p"] and child.root == cx.root and cx.root.is_dir()
    cx2 = CX(tmp_path).push(p).push(p["a"])
    assert cx2.get_path() == tmp_path / "p" / "a" and cx2.get_path(include_root=False).as_posix() == "p/a"
    assert cx2.mkdir().is_dir() and cx2.pop().get_names() == ["p"]
