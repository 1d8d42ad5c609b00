"""The served pipeline: one loaded, set-up version of a dump, and the live one behind a reload watch.

:class:`LoadedVersion` is a dump loaded once, set up, in inference mode, with the
description the protocol's metadata needs (inputs, outputs, class labels) and a count of
the calls inside it. :class:`ServedModel` holds the live version and watches the dump's
root digest: when a new dump is saved at the path, the new version is loaded and set up
in a background thread, swapped in between two requests, and the old one is torn down
once its last call has returned. A new dump that fails to load or set up (broken,
untrusted) is logged and refused; the old one keeps serving.
"""
from __future__ import annotations

import datetime
import inspect
import logging
import threading
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from stepline.core.context import ExecutionContext
from stepline.core.data import DataContainer
from stepline.core.mode import inference
from stepline.core.step import BaseTransformer
from stepline.saving.manifest import MANIFEST_NAME as MANIFEST

logger = logging.getLogger("stepline.serving")


class ModelLoadError(RuntimeError):
    """The dump at the served path could not be loaded or set up."""


class OutputError(RuntimeError):
    """The pipeline returned outputs the server cannot send (wrong row count, values that are not
    numbers or text): a fault of the served pipeline, not of the request; ``step`` is its last step."""

    def __init__(self, step: str | None, problem: str):
        where = f"step {step!r}" if step else "the pipeline"
        super().__init__(f"{where} (the pipeline's last) {problem}")
        self.step = step


class PredictionError(ValueError):
    """The pipeline raised on a request's data; ``step`` names the step that raised."""

    def __init__(self, step: str | None, error: BaseException):
        where = f"step {step!r}" if step else "the pipeline"
        super().__init__(f"{where} raised {type(error).__name__}: {error}")
        self.step = step


# ------------------------------------------------------------------ the dump's version
def dump_digest(folder) -> str:
    """The root digest of the dump in ``folder`` (its version); OSError while no dump is there."""
    from stepline.saving.errors import StepLoadError
    from stepline.saving.manifest import root_digest
    try:
        return root_digest(folder)
    except StepLoadError as error:  # between the two renames of an atomic save, or removed
        raise FileNotFoundError(str(error)) from error


def load_dump(folder, trusted: bool = False):
    """Load the step saved in ``folder``; ``trusted=True`` is passed on where ``load`` takes it."""
    folder = Path(folder).resolve()
    context = ExecutionContext(folder.parent)
    if trusted and "trusted" in inspect.signature(context.load).parameters:
        return context.load(folder.name, trusted=True)
    return context.load(folder.name)


# ------------------------------------------------------------------ one loaded version
class LoadedVersion:
    """A dump loaded and set up once; counts the calls inside it."""

    def __init__(self, folder: Path, digest: str, trusted: bool = False):
        self.folder = Path(folder)
        self.digest = digest
        try:
            step = load_dump(self.folder, trusted)
        except Exception as error:
            raise ModelLoadError(f"{self.folder}: {type(error).__name__}: {error}") from error
        try:
            step.setup(ExecutionContext(self.folder.parent))
        except Exception as error:
            _teardown_quietly(step)  # release what the part of setup that ran created
            raise ModelLoadError(f"{self.folder}: setup failed: {type(error).__name__}: {error}") from error
        self.step = step
        self.last_step = _last_step_name(step)
        self.final = _final_estimator(step)
        self.classes = _classes(self.final)
        self.has_proba = self.final is not None and hasattr(self.final, "predict_proba")
        self.feature_names, self.n_features, self.column_types = _input_schema(step)
        self._calls = 0
        self._idle = threading.Condition(threading.Lock())
        self._torn_down = False

    # ------------------------------------------------------------ calls
    def enter(self) -> None:
        """Count a call inside this version (teardown waits for the count to reach 0)."""
        with self._idle:
            self._calls += 1

    def leave(self) -> None:
        """The call counted by :meth:`enter` has returned."""
        with self._idle:
            self._calls -= 1
            if not self._calls:
                self._idle.notify_all()

    def predict(self, data):
        """The pipeline's predictions for ``data``; :class:`PredictionError` names the step that raised,
        :class:`OutputError` says what is wrong with what it returned."""
        try:
            outputs = self.step.predict(data)
        except Exception as error:
            raise PredictionError(failing_step(error), error) from error
        return self.checked_outputs(outputs, len(data), "predictions")

    def predict_proba(self, data):
        """Class probabilities: every step but the last transforms, the last one's ``predict_proba``."""
        if not self.has_proba:
            raise PredictionError(None, TypeError("the last step has no predict_proba"))
        try:
            with inference():
                outputs = _predict_proba(self.step, data)
        except Exception as error:
            raise PredictionError(failing_step(error), error) from error
        return self.checked_outputs(outputs, len(data), "probabilities")

    def checked_outputs(self, outputs, rows: int, what: str) -> np.ndarray:
        """``outputs`` as an array of one entry per input row holding numbers, booleans, text or dates."""
        try:
            array = np.asarray(outputs)
        except (ValueError, TypeError) as error:
            raise OutputError(self.last_step, f"returned {what} that are not one array ({error})") from None
        if array.ndim == 0 or len(array) != rows:
            got = "a single value" if array.ndim == 0 else f"{len(array)} rows"
            raise OutputError(self.last_step, f"returned {got} of {what} for {rows} rows of input")
        if array.dtype == object:
            odd = next((v for v in array.ravel() if not isinstance(v, _SENDABLE)), _NOTHING)
            if odd is not _NOTHING:
                raise OutputError(self.last_step, f"returned {what} holding {type(odd).__name__} values "
                                                  f"({_short(odd)}); expected numbers, booleans or text")
        return array

    def teardown(self, wait_s: float | None = None) -> bool:
        """Wait for the calls inside to return (at most ``wait_s`` seconds), then tear the pipeline
        down (once); False, and no teardown, when calls are still inside after ``wait_s``."""
        with self._idle:
            if not self._idle.wait_for(lambda: self._calls == 0, wait_s):
                logger.error("%s: %d call(s) still running in version %s after %s s (a predict that does "
                             "not return?); not tearing it down, since teardown never runs while a call is "
                             "inside", self.folder, self._calls, self.digest[:12], wait_s)
                return False
            if self._torn_down:
                return True
            self._torn_down = True
        try:
            self.step.teardown()
        except Exception:
            logger.exception("%s: teardown of version %s failed", self.folder, self.digest[:12])
        return True


_SENDABLE = (str, bytes, bool, int, float, np.generic, datetime.date, datetime.timedelta)
_NOTHING = object()


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _last_step_name(step) -> str | None:
    """The name of the step that produces the outputs: the last leaf of (nested) pipelines."""
    from stepline.core.composite import TruncableSteps
    while isinstance(step, TruncableSteps) and len(step):
        step = step.values()[-1]
    return getattr(step, "name", None)


def _teardown_quietly(step) -> None:
    try:
        step.teardown()
    except Exception:
        logger.debug("teardown after a failed setup failed too", exc_info=True)


def failing_step(error: BaseException) -> str | None:
    """The name of the innermost step whose method is in ``error``'s traceback."""
    name = None
    tb = error.__traceback__
    while tb is not None:
        owner = tb.tb_frame.f_locals.get("self")
        if isinstance(owner, BaseTransformer):
            name = owner.name
        tb = tb.tb_next
    return name


def _final_estimator(step):
    """What produces the outputs: the last step of (nested) pipelines, unwrapped to its estimator."""
    from stepline.core.composite import TruncableSteps
    while isinstance(step, TruncableSteps) and len(step):
        step = step.values()[-1]
    return getattr(step, "wrapped_sklearn_predictor", step)


def _predict_proba(step, data):
    from stepline.core.composite import TruncableSteps
    context = ExecutionContext()
    while isinstance(step, TruncableSteps) and len(step):
        container = DataContainer(data)
        context = context.push(step)
        for child in step.values()[:-1]:
            container = child.handle_transform(container, context)
        data, step = container.data_inputs, step.values()[-1]
    return getattr(step, "wrapped_sklearn_predictor", step).predict_proba(data)


def _classes(final):
    classes = getattr(final, "classes_", None)
    return None if classes is None else np.asarray(classes)


def _input_schema(step):
    """``(feature_names, n_features, {column: v2 datatype})`` of the first scikit-learn estimator."""
    estimator = None

    def find(s, _context):
        nonlocal estimator
        if estimator is None and hasattr(s, "wrapped_sklearn_predictor"):
            estimator = s.wrapped_sklearn_predictor

    step.apply(find)
    if estimator is None:
        return None, None, {}
    names = getattr(estimator, "feature_names_in_", None)
    names = None if names is None else [str(n) for n in names]
    return names, getattr(estimator, "n_features_in_", None), _string_columns(estimator)


def _string_columns(estimator) -> dict:
    """Columns that encoders of a ColumnTransformer saw as strings: ``{name: "BYTES"}``."""
    found = {}
    for _, transformer, columns in getattr(_first(estimator), "transformers_", []) or []:
        categories = getattr(_first(transformer), "categories_", None)
        if categories is None or isinstance(columns, (str, slice)) or not hasattr(columns, "__iter__"):
            continue
        for column, values in zip(columns, categories):
            if np.asarray(values).dtype.kind in "OU":
                found[str(column)] = "BYTES"
    return found


def _first(estimator):
    steps = getattr(estimator, "steps", None)
    return steps[0][1] if steps else estimator


# ------------------------------------------------------------------ the live version
class ServedModel:
    """The live version of the dump at ``path``, reloaded when a new dump is saved there.

    ``start()`` loads the first version (raising :class:`ModelLoadError`) and starts the
    watch; ``use()`` gives the live version for one call; ``stop()`` ends the watch and
    tears the live version down after the calls in flight.
    """

    def __init__(self, path, name: str | None = None, trusted: bool = False, poll_interval: float = 1.0):
        self.path = Path(path).resolve()
        self.name = name or self.path.name
        self.trusted = trusted
        self.poll_interval = poll_interval
        self.live: LoadedVersion | None = None
        self.refused: dict[str, str] = {}  # digest -> why it was refused
        self.reloads = 0
        self._swap_lock = threading.Lock()
        self._stopped = threading.Event()
        self._watch: threading.Thread | None = None
        self._retiring: list[threading.Thread] = []  # old versions being torn down

    def start(self) -> "ServedModel":
        try:
            digest = dump_digest(self.path)
        except OSError as error:
            raise ModelLoadError(f"{self.path}: no stepline dump here ({error.strerror or error})") from error
        self.live = LoadedVersion(self.path, digest, self.trusted)
        logger.info("serving %s version %s from %s", self.name, digest[:12], self.path)
        if self.poll_interval:
            self._watch = threading.Thread(target=self._watch_loop, name="stepline-reload", daemon=True)
            self._watch.start()
        return self

    @property
    def ready(self) -> bool:
        return self.live is not None and not self._stopped.is_set()

    def acquire(self) -> LoadedVersion:
        """The live version, counted as busy until its ``leave()`` (a swap never tears it down mid-call)."""
        with self._swap_lock:  # a reference taken under the lock is counted before a swap can retire it
            version = self.live
            if version is None:
                raise ModelLoadError(f"{self.name}: not loaded")
            version.enter()
        return version

    @contextmanager
    def use(self):
        """:meth:`acquire` for the length of a ``with`` block."""
        version = self.acquire()
        try:
            yield version
        finally:
            version.leave()

    def check_for_new_dump(self) -> bool:
        """Load, set up and swap in the dump at the path if its digest changed; True when swapped."""
        try:
            digest = dump_digest(self.path)
        except OSError:
            return False  # between the two renames of an atomic save, or removed: keep serving
        if digest == self.live.digest or digest in self.refused:
            return False
        try:
            new = LoadedVersion(self.path, digest, self.trusted)
        except ModelLoadError as error:
            self.refused[digest] = str(error)
            logger.error("refused the new dump at %s (version %s); still serving %s: %s",
                         self.path, digest[:12], self.live.digest[:12], error)
            return False
        if self._digest_or_none() != digest:  # saved again while loading: the next check takes that one
            new.teardown()
            return False
        with self._swap_lock:
            old, self.live = self.live, new
        self.reloads += 1
        logger.info("reloaded %s: version %s replaces %s", self.name, digest[:12], old.digest[:12])
        retiring = threading.Thread(target=old.teardown, name="stepline-teardown", daemon=True)
        retiring.start()
        self._retiring = [t for t in self._retiring if t.is_alive()] + [retiring]
        return True

    def _digest_or_none(self):
        try:
            return dump_digest(self.path)
        except OSError:
            return None

    def _watch_loop(self) -> None:
        while not self._stopped.wait(self.poll_interval):
            try:
                self.check_for_new_dump()
            except Exception:  # the watch must outlive any surprise; the live version keeps serving
                logger.exception("%s: reload check failed", self.path)

    def stop(self, wait_s: float | None = None) -> None:
        """Stop watching and tear the live version down once its calls have returned (waiting at most
        ``wait_s`` seconds for them: a call that never returns must not keep the server from exiting)."""
        self._stopped.set()
        if self._watch is not None:
            self._watch.join(timeout=60)
        for retiring in self._retiring:
            retiring.join(timeout=60 if wait_s is None else wait_s)
        if self.live is not None:
            self.live.teardown(wait_s)
