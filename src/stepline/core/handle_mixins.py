"""Neuraxle's handler mixins: steps written as ``_fit_data_container``/``_transform_data_container``.

- :class:`ForceHandleMixin`: plain ``fit``/``transform``/``fit_transform`` go through the
  handlers (the step must define the three ``_…_data_container`` hooks, checked at init).
- :class:`HandleOnlyMixin`: the step works only on containers; plain calls are refused.
- :class:`ForceHandleIdentity`: passes containers through; override a hook to observe them.
- Assertion steps: :class:`AssertExpectedOutputIsNone`, :class:`AssertExpectedOutputIsNotNone`.
"""
from __future__ import annotations

from stepline.core.context import ExecutionContext, ExecutionMode
from stepline.core.mixins import Identity

_HOOKS_TO_DEFINE = ("_fit_data_container", "_fit_transform_data_container", "_transform_data_container")


def _container(data_inputs, expected_outputs=None):
    from stepline.data_container import DataContainer
    return DataContainer(data_inputs=data_inputs, expected_outputs=expected_outputs)


class ForceHandleMixin:
    """Plain calls go through the handlers, under a context of the call's execution mode."""

    def __init__(self, cache_folder=None):
        from stepline.core.step import BaseStep
        needed = _HOOKS_TO_DEFINE if isinstance(self, BaseStep) else ("_transform_data_container",)
        for hook in needed:
            if getattr(type(self), hook, None) is None:
                raise NotImplementedError(
                    f"ForceHandleMixin sends fit, transform and fit_transform to the handlers, which call "
                    f"_fit_data_container, _fit_transform_data_container and _transform_data_container. "
                    f"Please define {hook} in {type(self).__name__}.")

    def _context_for(self, mode: ExecutionMode) -> ExecutionContext:
        from stepline.core.lifecycle import SETUP_CONTEXT
        context = self.__dict__.get(SETUP_CONTEXT) or ExecutionContext()
        return context._copy(execution_mode=mode)

    def fit(self, data_inputs, expected_outputs=None):
        return self.handle_fit(_container(data_inputs, expected_outputs), self._context_for(ExecutionMode.FIT))

    def transform(self, data_inputs):
        dc = self.handle_transform(_container(data_inputs), self._context_for(ExecutionMode.TRANSFORM))
        return dc.data_inputs

    def fit_transform(self, data_inputs, expected_outputs=None):
        step, dc = self.handle_fit_transform(_container(data_inputs, expected_outputs),
                                             self._context_for(ExecutionMode.FIT_TRANSFORM))
        return step, dc.data_inputs


class HandleOnlyMixin:
    """The step is written with handler hooks only; plain ``fit``/``transform`` are refused."""

    def __init__(self, cache_folder=None):
        pass

    def _fit_data_container(self, data_container, context):
        return self

    def _fit_transform_data_container(self, data_container, context):
        new_self = self._fit_data_container(data_container, context)
        return new_self, self._transform_data_container(data_container, context)

    def _refuse(self, method: str):
        raise RuntimeError(f"{type(self).__name__} ({self.name!r}) works on data containers only: "
                           f"call handle_{method} instead of {method}")

    def fit(self, data_inputs, expected_outputs=None):
        self._refuse("fit")

    def transform(self, data_inputs):
        self._refuse("transform")

    def fit_transform(self, data_inputs, expected_outputs=None):
        self._refuse("fit_transform")


class TransformHandlerOnlyMixin(HandleOnlyMixin):
    """Only ``_transform_data_container`` is needed; fitting learns nothing."""


class ForceHandleOnlyMixin(ForceHandleMixin, HandleOnlyMixin):
    """Handler hooks only, and plain calls routed to them."""

    def __init__(self, cache_folder=None):
        HandleOnlyMixin.__init__(self)
        ForceHandleMixin.__init__(self)

    fit = ForceHandleMixin.fit
    transform = ForceHandleMixin.transform
    fit_transform = ForceHandleMixin.fit_transform


class IdentityHandlerMethodsMixin(ForceHandleOnlyMixin):
    """Hooks that pass containers through unchanged."""

    def _fit_data_container(self, data_container, context):
        return self

    def _transform_data_container(self, data_container, context):
        return data_container

    def _fit_transform_data_container(self, data_container, context):
        return self, data_container


class ForceHandleIdentity(IdentityHandlerMethodsMixin, Identity):
    """Passes data through by the handlers; override ``_will_process``/``_did_process`` to observe."""

    def __init__(self, name=None):
        Identity.__init__(self, name=name)
        ForceHandleMixin.__init__(self)


# ------------------------------------------------------------------ assertions
def _no_expected_outputs(data_container) -> bool:
    eo = data_container.expected_outputs
    return eo is None or all(v is None for v in eo)


class AssertExpectedOutputIsNoneMixin:
    """Fails (``AssertionError``; only logs in PROD) when expected outputs are given."""

    def _will_process(self, data_container, context):
        self._assert(_no_expected_outputs(data_container),
                     f"{self.name}: expected outputs should be None or a list of None, "
                     f"got {data_container.expected_outputs!r}", context)
        return data_container, context


class AssertExpectedOutputIsNotNoneMixin:
    """Fails (``AssertionError``; only logs in PROD) when no expected outputs are given."""

    def _will_process(self, data_container, context):
        self._assert(not _no_expected_outputs(data_container),
                     f"{self.name}: expected outputs should be given, got {data_container.expected_outputs!r}",
                     context)
        return data_container, context


class AssertExpectedOutputIsNone(AssertExpectedOutputIsNoneMixin, ForceHandleIdentity):
    """Passes data through; fails when expected outputs are given."""


class AssertExpectedOutputIsNotNone(AssertExpectedOutputIsNotNoneMixin, ForceHandleIdentity):
    """Passes data through; fails when no expected outputs are given."""


AssertExpectedOutputIsNoneStep = AssertExpectedOutputIsNone
