"""A conformance kit for your own steps and savers, as scikit-learn's ``check_estimator``.

``check_step(MyStep)`` (or ``check_step(MyStep(...), data_inputs=X, expected_outputs=y)``)
runs every check below on fresh copies of the step and raises :class:`StepCheckError`
naming the first check that fails; it returns the names of the checks that passed.

- ``lifecycle``: ``setup`` and ``teardown`` are idempotent, set ``is_initialized``, and the
  step can be set up again after a teardown; ``__init__`` made no files.
- ``fit_transform``: ``fit`` returns the fitted step; ``fit_transform`` returns
  ``(step, outputs)`` with the outputs ``transform`` gives.
- ``hyperparams``: ``get_hyperparams`` → ``set_hyperparams`` gives the same values back, and
  so does a sample of the declared space.
- ``save_load``: the fitted step saved (full dump) and loaded **in a fresh Python process**
  gives identical outputs (the step's savers do the work; its classes must be importable
  there, or defined in ``__main__``).
- ``thread_safe_first_call``: a loaded step, never set up, called from several threads at
  once gives every thread the same outputs (and is set up once).
- ``predict_inference``: ``predict`` gives what ``transform`` gives in inference mode
  (``set_train(False)``) and leaves the step's mode as it was.
"""
from __future__ import annotations

import copy
import os
import pickle
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np

__all__ = ["check_step", "StepCheckError", "CHECKS"]

CHECKS = ("lifecycle", "fit_transform", "hyperparams", "save_load", "thread_safe_first_call", "predict_inference")


class StepCheckError(AssertionError):
    """A conformance check failed; the message names the check and the step."""


def _default_data():
    rng = np.random.default_rng(0)
    data_inputs = rng.normal(size=(24, 3))
    return data_inputs, (data_inputs[:, 0] > 0).astype(int)


def _same(a, b) -> bool:
    if hasattr(a, "equals") and hasattr(b, "equals"):
        return bool(a.equals(b))
    try:
        a_arr, b_arr = np.asarray(a), np.asarray(b)
        if a_arr.dtype.kind in "fc" and b_arr.dtype.kind in "fc":
            return a_arr.shape == b_arr.shape and bool(np.allclose(a_arr, b_arr, equal_nan=True))
        return bool(np.array_equal(a_arr, b_arr))
    except Exception:  # noqa: BLE001 - ragged data: plain equality
        return a == b


def _fail(check: str, step, message: str):
    raise StepCheckError(f"check_step[{check}] failed for step {step.name!r} ({type(step).__name__}): {message}")


def check_step(step_or_class, data_inputs=None, expected_outputs=None, fresh_process: bool = True,
               n_threads: int = 8, skip=()) -> list:
    """Run the conformance checks (see the module) on ``step_or_class``; returns their names.

    A class is instantiated with no arguments. ``data_inputs``/``expected_outputs``
    default to a small float matrix and a 0/1 target. ``fresh_process=False`` loads the
    dump in this process instead (faster; it no longer proves that the dump is complete).
    ``skip`` names checks that do not apply (e.g. ``("fit_transform",)`` for a step whose
    ``fit_transform`` reorders rows on purpose, as ``DataShuffler`` does).
    """
    unknown = set(skip) - set(CHECKS)
    if unknown:
        raise ValueError(f"check_step: unknown checks {sorted(unknown)}; the checks are {list(CHECKS)}")
    prototype = step_or_class() if isinstance(step_or_class, type) else step_or_class
    if data_inputs is None:
        data_inputs, default_eo = _default_data()
        expected_outputs = default_eo if expected_outputs is None else expected_outputs
    def fresh():  # every check starts from the step as given
        try:
            return copy.deepcopy(prototype)
        except Exception as error:  # noqa: BLE001 - reported as a failed check
            _fail("copy", prototype, f"the step cannot be deep-copied ({type(error).__name__}: {error}); create "
                                     f"resources that cannot be copied or pickled in setup(), not __init__")
    passed = []

    def run(name, check, *args):
        if name not in skip:
            check(*args)
            passed.append(name)
    run("lifecycle", _check_lifecycle, fresh())
    fitted, outputs = _fitted(fresh(), data_inputs, expected_outputs)
    run("fit_transform", _check_fit_transform, fresh(), data_inputs, expected_outputs, outputs)
    run("hyperparams", _check_hyperparams, fresh())
    with tempfile.TemporaryDirectory(prefix="stepline-check-") as root:
        run("save_load", _check_save_load, fitted, data_inputs, outputs, Path(root), fresh_process)
        if "thread_safe_first_call" not in skip and "save_load" in skip:
            fitted.save(_context(Path(root) / "dump"), full_dump=True)
        run("thread_safe_first_call", _check_thread_safe_first_call, fitted, Path(root), data_inputs, outputs,
            n_threads)
    run("predict_inference", _check_predict, copy.deepcopy(fitted), data_inputs)
    return passed


def _context(root):
    from stepline.core.context import ExecutionContext
    return ExecutionContext(root)


def _check_lifecycle(step) -> None:
    if step.is_initialized:
        _fail("lifecycle", step, "a new step is already set up: __init__ must be cheap, setup does the work")
    for attempt in ("first", "second"):
        if step.setup() is not step:
            _fail("lifecycle", step, f"the {attempt} setup() did not return the step")
        if not step.is_initialized:
            _fail("lifecycle", step, f"is_initialized is false after the {attempt} setup()")
    for attempt in ("first", "second"):
        if step.teardown() is not step:
            _fail("lifecycle", step, f"the {attempt} teardown() did not return the step")
        if step.is_initialized:
            _fail("lifecycle", step, f"is_initialized is still true after the {attempt} teardown()")
    step.setup()
    if not step.is_initialized:
        _fail("lifecycle", step, "the step cannot be set up again after a teardown")
    step.teardown()


def _fitted(step, data_inputs, expected_outputs):
    fitted = step.fit(copy.deepcopy(data_inputs), copy.deepcopy(expected_outputs))
    if fitted is None or not hasattr(fitted, "transform"):
        _fail("fit_transform", step, f"fit returned {type(fitted).__name__}, not the fitted step")
    return fitted, fitted.transform(copy.deepcopy(data_inputs))


def _check_fit_transform(step, data_inputs, expected_outputs, outputs) -> None:
    result = step.fit_transform(copy.deepcopy(data_inputs), copy.deepcopy(expected_outputs))
    if not (isinstance(result, tuple) and len(result) == 2):
        _fail("fit_transform", step, "fit_transform must return (fitted_step, outputs)")
    if not _same(result[1], outputs):
        _fail("fit_transform", step, "fit_transform's outputs differ from fit then transform on the same data "
                                     "(is the step deterministic?)")


def _check_hyperparams(step) -> None:
    try:
        _hyperparams_round_trip(step)
    except StepCheckError:
        raise
    except Exception as error:  # noqa: BLE001 - reported as the failed check
        _fail("hyperparams", step, f"{type(error).__name__}: {error}")


def _hyperparams_round_trip(step) -> None:
    values = step.get_hyperparams()
    step.set_hyperparams(values)
    if step.get_hyperparams() != values:
        _fail("hyperparams", step, f"set_hyperparams(get_hyperparams()) changed them: {values} -> "
                                   f"{step.get_hyperparams()}")
    space = step.get_hyperparams_space()
    if space:
        sample = space.rvs(random_state=0)
        step.set_hyperparams(sample)
        got = step.get_hyperparams().to_flat_dict()
        wrong = {k: (v, got.get(k)) for k, v in sample.to_flat_dict().items() if not _same(got.get(k), v)}
        if wrong:
            _fail("hyperparams", step, f"values set from the space did not come back: {wrong}")
    if pickle.loads(pickle.dumps(step.get_hyperparams())) != step.get_hyperparams():
        _fail("hyperparams", step, "the hyperparameters do not survive pickling")


_LOADER = """
import pickle, sys
from stepline.base import ExecutionContext
root, name, inputs_path, out_path = sys.argv[1:5]
with open(inputs_path, "rb") as f:
    data_inputs = pickle.load(f)
step = ExecutionContext(root).load(name)
outputs = step.transform(data_inputs)
step.teardown()
with open(out_path, "wb") as f:
    pickle.dump(outputs, f)
"""


def _check_save_load(fitted, data_inputs, outputs, root: Path, fresh_process: bool) -> None:
    from stepline.core.context import ExecutionContext
    try:
        fitted.save(ExecutionContext(root / "dump"), full_dump=True)
    except Exception as error:  # noqa: BLE001 - reported as the failed check
        _fail("save_load", fitted, f"save raised {type(error).__name__}: {error}")
    if not fresh_process:
        loaded = ExecutionContext(root / "dump").load(fitted.name)
        reloaded_outputs = loaded.transform(copy.deepcopy(data_inputs))
        loaded.teardown()
    else:
        reloaded_outputs = _load_in_fresh_process(fitted, root, data_inputs)
    if not _same(reloaded_outputs, outputs):
        _fail("save_load", fitted, "the loaded step's outputs differ from the saved step's")


def _load_in_fresh_process(fitted, root: Path, data_inputs):
    inputs_path, out_path = root / "inputs.pkl", root / "outputs.pkl"
    with open(inputs_path, "wb") as f:
        pickle.dump(data_inputs, f)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    done = subprocess.run([sys.executable, "-c", _LOADER, str(root / "dump"), fitted.name, str(inputs_path),
                           str(out_path)], env=env, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        _fail("save_load", fitted, f"loading in a fresh process failed: {last}")
    with open(out_path, "rb") as f:
        return pickle.load(f)


def _check_thread_safe_first_call(fitted, root: Path, data_inputs, outputs, n_threads: int) -> None:
    from stepline.core.context import ExecutionContext
    loaded = ExecutionContext(root / "dump").load(fitted.name)
    if loaded.is_initialized:
        _fail("thread_safe_first_call", fitted, "a loaded step comes back already set up")
    results, errors = [None] * n_threads, []
    barrier = threading.Barrier(n_threads)

    def call(i):
        try:
            barrier.wait()
            results[i] = loaded.transform(copy.deepcopy(data_inputs))
        except Exception as error:  # noqa: BLE001 - collected and reported
            errors.append(error)
    threads = [threading.Thread(target=call, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    loaded.teardown()
    if errors:
        _fail("thread_safe_first_call", fitted, f"{len(errors)} of {n_threads} concurrent first calls raised "
                                                f"{type(errors[0]).__name__}: {errors[0]}")
    if not all(_same(r, outputs) for r in results):
        _fail("thread_safe_first_call", fitted, "concurrent first calls gave different outputs")


def _check_predict(step, data_inputs) -> None:
    was_train = step.is_train
    predicted = step.predict(copy.deepcopy(data_inputs))
    if step.is_train != was_train:
        _fail("predict_inference", step, "predict changed the step's mode")
    inference_outputs = copy.deepcopy(step).set_train(False).transform(copy.deepcopy(data_inputs))
    if not _same(predicted, inference_outputs):
        _fail("predict_inference", step, "predict differs from transform in inference mode (set_train(False))")
