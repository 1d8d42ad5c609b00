"""Neuraxle's handler hooks (``_will_process``, ``_fit_data_container``, …) on stepline steps.

A step class that defines any of the hook names below gets ``handle_fit``,
``handle_transform`` and ``handle_fit_transform`` that run Neuraxle's chain::

    _will_process → _will_fit → _fit_data_container → _did_fit → _did_process

(and the same for transform and fit_transform). The hooks it does not define
default to the step's own stepline handlers, so a class that only overrides
``_will_process`` still fits and transforms as before. Classes without hooks keep
their handlers untouched: the hot path gains nothing.
"""
from __future__ import annotations

HOOKS = ("_will_process", "_did_process", "_will_fit", "_did_fit", "_will_transform", "_did_transform",
         "_will_fit_transform", "_did_fit_transform", "_fit_data_container", "_transform_data_container",
         "_fit_transform_data_container")
_HANDLERS = ("handle_fit", "handle_transform", "handle_fit_transform")


def _dact(data_container):
    from stepline.data_container import as_dact
    return as_dact(data_container)


def install_handler_hooks(cls) -> None:
    """Give ``cls`` Neuraxle's hook chain if it (or a parent) defines a hook."""
    for handler in _HANDLERS:
        plain = "_plain_" + handler
        own = cls.__dict__.get(handler)
        if own is not None and not getattr(own, "_is_hook_chain", False):
            setattr(cls, plain, own)  # a stepline handler written on this class
    if not any(hasattr(cls, hook) for hook in HOOKS):
        return
    for handler in _HANDLERS:
        if getattr(cls, "_plain_" + handler, None) is None:
            setattr(cls, "_plain_" + handler, getattr(cls, handler))
        if not getattr(cls.__dict__.get(handler), "_is_hook_chain", False):
            setattr(cls, handler, _CHAINS[handler])
    if hasattr(cls, "_transform_data_container") and _defined_by_base(cls, "transform"):
        cls.transform = _plain_transform_by_hooks  # a step written with hooks only still transforms


def _defined_by_base(cls, name: str) -> bool:
    """Whether ``cls.<name>`` is still the root step's default (the user wrote none)."""
    fn = getattr(cls, name, None)
    while hasattr(fn, "__wrapped_lifecycle__"):  # the lifecycle guards wrap it
        fn = fn.__wrapped_lifecycle__
    return getattr(fn, "__qualname__", "") == f"BaseTransformer.{name}" and fn.__module__ == "stepline.core.step"


def _plain_transform_by_hooks(self, data_inputs):
    from stepline.core.context import ExecutionContext, ExecutionMode
    from stepline.core.lifecycle import SETUP_CONTEXT
    context = self.__dict__.get(SETUP_CONTEXT) or ExecutionContext()
    return self.handle_transform(_dact_of(data_inputs), context._copy(execution_mode=ExecutionMode.TRANSFORM)).data_inputs


def _dact_of(data_inputs):
    from stepline.data_container import DataContainer
    return DataContainer(data_inputs=data_inputs)


def _hook(step, name, default):
    fn = getattr(step, name, None)
    return fn if fn is not None else default


def _pass(data_container, context):
    return data_container, context


def _same(data_container, context):
    return data_container


def _chain_fit(self, data_container, context):
    if not self.is_initialized:
        self._lazy_setup()
    dc, cx = _hook(self, "_will_process", _pass)(_dact(data_container), context)
    dc, cx = _hook(self, "_will_fit", _pass)(dc, cx)
    new_self = _hook(self, "_fit_data_container", self._plain_handle_fit)(dc, cx)
    _hook(self, "_did_fit", _same)(dc, cx)
    _hook(self, "_did_process", _same)(dc, cx)
    return new_self


def _chain_transform(self, data_container, context):
    if not self.is_initialized:
        self._lazy_setup()
    dc, cx = _hook(self, "_will_process", _pass)(_dact(data_container), context)
    dc, cx = _hook(self, "_will_transform", _pass)(dc, cx)
    dc = _hook(self, "_transform_data_container", self._plain_handle_transform)(dc, cx)
    dc = _hook(self, "_did_transform", _same)(dc, cx)
    return _hook(self, "_did_process", _same)(dc, cx)


def _chain_fit_transform(self, data_container, context):
    if not self.is_initialized:
        self._lazy_setup()
    dc, cx = _hook(self, "_will_process", _pass)(_dact(data_container), context)
    dc, cx = _hook(self, "_will_fit_transform", _pass)(dc, cx)
    new_self, dc = _hook(self, "_fit_transform_data_container", self._plain_handle_fit_transform)(dc, cx)
    dc = _hook(self, "_did_fit_transform", _same)(dc, cx)
    return new_self, _hook(self, "_did_process", _same)(dc, cx)


_CHAINS = {"handle_fit": _chain_fit, "handle_transform": _chain_transform,
           "handle_fit_transform": _chain_fit_transform}
for _fn in _CHAINS.values():
    _fn._is_hook_chain = True
