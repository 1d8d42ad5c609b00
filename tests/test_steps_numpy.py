"""NumPy steps and FunctionStep: outputs, inverses, hyperparameters, logging, saving."""
import logging
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from conftest import roundtrip
from stepline import Pipeline
from stepline.base import HyperparameterError, NotFittedError
from stepline.hyperparams.distributions import RandInt
from stepline.steps.numpy import (AddN, FunctionStep, MultiplyByN, NumpyConcatenateInnerFeatures,
                                  NumpyRavel, NumpyShapePrinter, NumpyTranspose, ToNumpy,
                                  concatenate_inner_features)

X = np.arange(12.0).reshape(4, 3)


def test_ravel_flattens_lists_and_arrays_and_passes_none():
    np.testing.assert_array_equal(NumpyRavel().transform(X), np.arange(12.0))
    np.testing.assert_array_equal(NumpyRavel().transform([[1, 2], [3, 4]]), [1, 2, 3, 4])
    assert NumpyRavel().transform(None) is None
    assert np.shares_memory(NumpyRavel().transform(X), X)  # a view, no copy


def test_ravel_needs_no_fit():
    step = NumpyRavel()
    assert not step._needs_fit
    step, out = step.fit_transform(X, X[:, 0])
    assert out.shape == (12,)


def test_concatenate_inner_features_joins_on_last_axis_in_order():
    a, b = np.ones((3, 2)), np.zeros((3, 1))
    out = NumpyConcatenateInnerFeatures().transform([a, b])
    np.testing.assert_array_equal(out, [[1, 1, 0]] * 3)
    three_d = concatenate_inner_features([np.ones((2, 5, 1)), np.zeros((2, 5, 3))])
    assert three_d.shape == (2, 5, 4) and three_d[..., 0].all() and not three_d[..., 1:].any()


def test_concatenate_inner_features_1d_are_columns():
    out = concatenate_inner_features([np.array([1, 2, 3]), np.array([[4], [5], [6]])])
    np.testing.assert_array_equal(out, [[1, 4], [2, 5], [3, 6]])


def test_concatenate_inner_features_refuses_mismatched_rows():
    with pytest.raises(ValueError, match=r"\(3, 2\).*\(4, 1\)"):
        concatenate_inner_features([np.ones((3, 2)), np.ones((4, 1))])
    with pytest.raises(ValueError, match="nothing"):
        concatenate_inner_features([])


def test_transpose_and_its_inverse():
    step = NumpyTranspose()
    out = step.transform(X)
    assert out.shape == (3, 4)
    np.testing.assert_array_equal(out, X.T)
    np.testing.assert_array_equal(step.inverse_transform(out), X)


def test_shape_printer_logs_shape_and_passes_data(caplog):
    step = NumpyShapePrinter("after scaling", name="shapes")
    with caplog.at_level(logging.INFO, logger="stepline.steps.numpy"):
        out = step.transform(X)
        step.transform([[1, 2]])
    assert out is X
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["shapes after scaling shape: (4, 3)", "shapes after scaling shape: (1, 2)"]


def test_shape_printer_prints_nothing(capsys):
    NumpyShapePrinter().transform(X)
    assert capsys.readouterr().out == ""


def test_multiply_by_n_and_inverse():
    step = MultiplyByN(3)
    np.testing.assert_array_equal(step.transform([1, 2]), [3, 6])
    np.testing.assert_array_equal(step.inverse_transform(step.transform(X)), X)
    assert step.get_hyperparams() == {"multiply_by": 3}
    assert MultiplyByN().transform([5]).tolist() == [5]


def test_add_n_and_inverse():
    step = AddN(add=10)
    np.testing.assert_array_equal(step.transform([1, 2]), [11, 12])
    np.testing.assert_array_equal(step.inverse_transform(step.transform(X)), X)
    assert AddN().transform([5]).tolist() == [6]


def test_hyperparams_route_through_pipeline_and_apply_at_call_time():
    p = Pipeline([("b", MultiplyByN(2)), ("a", AddN(1))])
    np.testing.assert_array_equal(p.transform([1.0]), [3.0])
    p.set_hyperparams({"b__multiply_by": 3})
    np.testing.assert_array_equal(p.transform([1.0]), [4.0])
    p.set_hyperparams({"a": {"add": -1}})
    np.testing.assert_array_equal(p.transform([1.0]), [2.0])
    assert p.get_hyperparams() == {"b__multiply_by": 3, "a__add": -1}


def test_unknown_hyperparam_is_an_error():
    with pytest.raises(HyperparameterError, match="multiply_by"):
        Pipeline([("b", MultiplyByN(2))]).set_hyperparams({"b__multiply": 3})


def test_hyperparams_space_given_is_enforced_and_sampled():
    step = MultiplyByN(2, hyperparams_space={"multiply_by": RandInt(1, 4)})
    with pytest.raises(HyperparameterError, match="outside"):
        step.set_hyperparams({"multiply_by": 9})
    sample = step.get_hyperparams_space().rvs(random_state=0)
    step.set_hyperparams(sample)
    assert step.hyperparams["multiply_by"] in {1, 2, 3, 4}


def test_to_numpy_converts_inputs_and_outputs_without_copying_arrays():
    step = ToNumpy(dtype=np.float32)
    out = step.transform([[1, 2], [3, 4]])
    assert isinstance(out, np.ndarray) and out.dtype == np.float32
    same = np.ones(3, dtype=np.float32)
    assert step.transform(same) is same
    seen = []

    class Spy(MultiplyByN):
        def fit(self, data_inputs, expected_outputs=None):
            seen.append(type(expected_outputs))
            return self

    Pipeline([ToNumpy(), Spy()]).fit([[1], [2]], [0, 1])
    assert seen == [np.ndarray]


def test_function_step_plain_function():
    step = FunctionStep(np.sqrt, name="root")
    assert not step._needs_fit and step.name == "root"
    np.testing.assert_array_equal(step.transform([4.0, 9.0]), [2.0, 3.0])
    np.testing.assert_array_equal(Pipeline([step]).fit_transform([16.0])[1], [4.0])


def test_function_step_with_fit_fn_learns_state():
    step = FunctionStep(lambda x, mean: np.asarray(x) - mean, fit_fn=lambda x, y: float(np.mean(x)))
    with pytest.raises(NotFittedError):
        step.transform([1.0])
    step = step.fit([1.0, 2.0, 3.0])
    assert step.state == 2.0
    np.testing.assert_array_equal(step.transform([2.0, 5.0]), [0.0, 3.0])


def test_function_step_refuses_non_callables():
    with pytest.raises(TypeError, match="functions"):
        FunctionStep(3)
    with pytest.raises(TypeError, match="functions"):
        FunctionStep(np.sqrt, fit_fn="mean")


def test_numpy_steps_save_and_load_in_a_pipeline(tmp_path):
    p = Pipeline([("t", NumpyTranspose()), ("r", NumpyRavel()), ("m", MultiplyByN(3)), ("a", AddN(2)),
                  ("s", NumpyShapePrinter("x")), ("n", ToNumpy(np.float32)),
                  ("f", FunctionStep(lambda x, m: x - m, fit_fn=lambda x, y: np.min(x)))], name="np_steps")
    p = p.fit(X)
    loaded = roundtrip(p, tmp_path, X)
    assert loaded["m"].hyperparams["multiply_by"] == 3 and loaded["n"].dtype == np.float32
    assert loaded["f"].state == p["f"].state


def test_function_from_main_saves_and_loads_without_its_source(tmp_path):
    save_script = tmp_path / "save_it.py"
    save_script.write_text(textwrap.dedent("""
        import sys
        import numpy as np
        from stepline import CX, Pipeline
        from stepline.steps.numpy import FunctionStep

        def cube(x):
            return np.asarray(x) ** 3

        def fit_min(x, y):
            return float(np.min(x))

        def shift(x, m):
            return np.asarray(x) - m

        p = Pipeline([FunctionStep(cube), FunctionStep(shift, fit_min)], name="fn_pipe")
        p = p.fit(np.arange(1.0, 4.0))
        p.save(CX(sys.argv[1]), full_dump=True)
        print(p.transform(np.array([2.0, 3.0])).tolist())
    """))
    load_script = tmp_path / "load_it.py"
    load_script.write_text(textwrap.dedent("""
        import sys
        import numpy as np
        from stepline import CX
        p = CX(sys.argv[1]).load("fn_pipe")
        print(p.transform(np.array([2.0, 3.0])).tolist())
    """))
    dump = tmp_path / "dump"
    saved = subprocess.run([sys.executable, str(save_script), str(dump)], capture_output=True, text=True,
                           cwd=tmp_path, timeout=120)
    assert saved.returncode == 0, saved.stderr
    save_script.unlink()
    loaded = subprocess.run([sys.executable, str(load_script), str(dump)], capture_output=True, text=True,
                            cwd=tmp_path, timeout=120)
    assert loaded.returncode == 0, loaded.stderr
    assert saved.stdout == loaded.stdout == "[7.0, 26.0]\n"
