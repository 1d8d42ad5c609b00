"""Lifecycle guards installed on every step class.

A user overrides the plain public methods (``setup``, ``teardown``, ``fit``,
``transform``, …) and may or may not call ``super()``. Each step class gets its
lifecycle methods wrapped once, when the class is created, so that on every path:

- ``setup`` is idempotent, always returns the step and sets ``is_initialized``;
- ``teardown`` is idempotent, always returns the step and clears ``is_initialized``;
- ``fit``/``transform``/``fit_transform``/``predict`` set the step up on first use;
- ``transform`` on a step that needs fitting and was never fitted raises
  :class:`NotFittedError` (not inside its own ``fit``/``fit_transform``, which may call
  ``self.transform`` as scikit-learn and Neuraxle steps do);
- ``fit`` marks the returned step fitted and changed (invalidated);
- ``predict`` runs under the inference call mode (:mod:`stepline.core.mode`);
- a root context given to ``setup`` is kept until ``teardown``: a plain
  ``fit``/``transform`` of a composite passes it to its children's handlers.

Thread safety (:mod:`stepline.core.transitions`): transitions hold the step's lock, so
``setup`` runs once however many threads make the first call, and a ``setup`` that
raises leaves the step not set up for the next call to retry; ``teardown`` waits for
the calls inside the step. A call on a set-up step takes no lock. Only the outermost
call of a ``super()`` chain manages the flags.
"""
from __future__ import annotations

import functools
from threading import get_ident

from stepline.core.errors import NotFittedError
from stepline.core.mode import _CALL_MODE
from stepline.core.transitions import LIFECYCLE_STATE, lifecycle_of

_GUARDED = "__stepline_guarded__"
SETUP_CONTEXT = "_stepline_setup_context"


def trivial_fit(fn):
    """Mark a ``fit``/``fit_transform`` that learns nothing by itself.

    A step whose own ``fit`` is trivial never needs fitting, and calling it does not
    mark the step changed (a ``fit_transform`` that only delegates to ``fit`` is
    marked trivial too: ``fit`` does the marking).
    """
    fn._stepline_trivial_fit = True
    return fn


def _guard_setup(fn):
    @functools.wraps(fn)
    def setup(self, context=None):
        lifecycle = lifecycle_of(self)
        if self.is_initialized and not lifecycle.closing:
            return self
        with lifecycle.lock:  # concurrent first calls wait here for the one setup
            if lifecycle.busy:  # a super().setup() inside a user's setup
                fn(self, context)
                return self
            lifecycle.wait_while_closing(get_ident())
            if self.is_initialized:  # another thread set it up while this one waited
                return self
            lifecycle.busy = True
            try:
                fn(self, context)
            finally:
                lifecycle.busy = False
            if context is not None and not context.parents:  # a root context: it refers to no step
                self.__dict__[SETUP_CONTEXT] = context  # plain fit/transform calls run under it
            self.is_initialized = True
        return self
    return setup


def _guard_teardown(fn):
    @functools.wraps(fn)
    def teardown(self):
        if not self.is_initialized:
            return self
        lifecycle = lifecycle_of(self)
        with lifecycle.lock:
            if lifecycle.busy:  # a super().teardown() inside a user's teardown
                fn(self)
                return self
            me = get_ident()
            lifecycle.wait_while_closing(me)  # another thread's teardown
            if not self.is_initialized:
                return self
            lifecycle.closing = me  # new calls of other threads now wait
            try:
                lifecycle.wait_for_other_calls(me, self)
                lifecycle.busy = True
                try:
                    fn(self)
                finally:
                    lifecycle.busy = False
                self.is_initialized = False
                self.__dict__.pop(SETUP_CONTEXT, None)
            finally:
                lifecycle.closing = None
                lifecycle.changed.notify_all()
        return self
    return teardown


def _enter(step) -> tuple:
    """Count a call inside ``step`` (set up first if needed); returns ``(lifecycle, thread id)``.

    The fast path, on a set-up step, takes no lock: it appends the thread id and checks.
    """
    lifecycle = step.__dict__.get(LIFECYCLE_STATE) or lifecycle_of(step)
    me = get_ident()
    lifecycle.calls.append(me)
    if lifecycle.closing or not step.is_initialized:
        lifecycle.leave(me)
        with lifecycle.lock:  # waits for another thread's setup or teardown
            if me not in lifecycle.calls:  # else this thread's outer call is inside: go on
                lifecycle.wait_while_closing(me)
            if not step.is_initialized and not lifecycle.busy:
                step._lazy_setup()
            lifecycle.calls.append(me)
    return lifecycle, me


def _not_fitted(step) -> NotFittedError:
    return NotFittedError(
        f"step {step.name!r} ({type(step).__name__}) is not fitted: "
        f"call fit (or fit_transform) before transform or predict")


def _mark_fitted(step, fitted, method: str, learns: bool = True):
    """Return the fitted step, marked fitted and (when its fit learns) changed."""
    if fitted is None:
        fitted = step
    elif not hasattr(fitted, "_needs_fit"):
        raise TypeError(
            f"{type(step).__name__}.{method} of step {step.name!r} returned "
            f"{type(fitted).__name__}; it must return the fitted step (usually `return self`)")
    fitted.is_fitted = True
    if learns:
        fitted._invalidated = True
    return fitted


def _guard_fit(fn):
    learns = not getattr(fn, "_stepline_trivial_fit", False)

    @functools.wraps(fn)
    def fit(self, data_inputs, expected_outputs=None, *args, **kwargs):
        lifecycle, me = _enter(self)
        lifecycle.fitting.append(me)  # its own transform may run inside (see _guard_transform)
        try:
            fitted = fn(self, data_inputs, expected_outputs, *args, **kwargs)
        finally:
            lifecycle.fitting.remove(me)
            lifecycle.leave(me)
        return _mark_fitted(self, fitted, "fit", learns)
    return fit


def _guard_fit_transform(fn):
    learns = not getattr(fn, "_stepline_trivial_fit", False)

    @functools.wraps(fn)
    def fit_transform(self, data_inputs, expected_outputs=None, *args, **kwargs):
        lifecycle, me = _enter(self)
        lifecycle.fitting.append(me)
        try:
            result = fn(self, data_inputs, expected_outputs, *args, **kwargs)
        finally:
            lifecycle.fitting.remove(me)
            lifecycle.leave(me)
        if not (isinstance(result, tuple) and len(result) == 2):
            raise TypeError(
                f"{type(self).__name__}.fit_transform of step {self.name!r} must return "
                f"(fitted_step, outputs), got {type(result).__name__}")
        return _mark_fitted(self, result[0], "fit_transform", learns), result[1]
    return fit_transform


def _guard_transform(fn):
    _get_ident = get_ident  # a local: the hot path looks up no global

    @functools.wraps(fn)
    def transform(self, data_inputs, *args, **kwargs):
        # the hot path, _enter and StepLifecycle.leave inlined: no lock on a set-up step
        lifecycle = self.__dict__.get(LIFECYCLE_STATE)
        if lifecycle is None:
            lifecycle, me = _enter(self)
        else:
            me = _get_ident()
            lifecycle.calls.append(me)  # inside first, then check: a teardown now waits for it
            if lifecycle.closing or not self.is_initialized:
                lifecycle.leave(me)
                lifecycle, me = _enter(self)
        try:
            if self._needs_fit and not self.is_fitted and me not in lifecycle.fitting:
                raise _not_fitted(self)  # a fit_transform may call its own transform: it is fitting
            if args or kwargs:
                return fn(self, data_inputs, *args, **kwargs)
            return fn(self, data_inputs)  # no argument unpacking
        finally:
            lifecycle.calls.remove(me)
            if lifecycle.closing:
                lifecycle.leave_notify()
    return transform


def _guard_predict(fn):
    transform = _guard_transform(fn)

    @functools.wraps(fn)
    def predict(self, data_inputs, *args, **kwargs):
        if _CALL_MODE.get() is False:  # already in inference (a predict inside a predict)
            return transform(self, data_inputs, *args, **kwargs)
        token = _CALL_MODE.set(False)  # this call and what it runs, in this thread only
        try:
            return transform(self, data_inputs, *args, **kwargs)
        finally:
            _CALL_MODE.reset(token)
    return predict


_GUARDS = {
    "setup": _guard_setup,
    "teardown": _guard_teardown,
    "fit": _guard_fit,
    "fit_transform": _guard_fit_transform,
    "transform": _guard_transform,
    "predict": _guard_predict,
}


def install_lifecycle_guards(cls) -> None:
    """Wrap ``cls``'s lifecycle methods (own or inherited from mixins) once."""
    own_fit = cls.__dict__.get("fit")
    if own_fit is not None and "_needs_fit" not in cls.__dict__:
        cls._needs_fit = not getattr(own_fit, "_stepline_trivial_fit", False)
    for name, guard in _GUARDS.items():
        fn = getattr(cls, name, None)
        if fn is not None and not getattr(fn, _GUARDED, False):
            wrapped = guard(fn)
            setattr(wrapped, _GUARDED, True)
            wrapped.__wrapped_lifecycle__ = fn
            setattr(cls, name, wrapped)
