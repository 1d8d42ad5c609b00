"""Methods every step has under Neuraxle's names (``with_context``, ``mutate``, ``_assert`` …).

:class:`NeuraxleStepAPI` is a base of :class:`~stepline.core.step.BaseTransformer`; it
holds only what Neuraxle code calls on a step and stepline spells otherwise, so that
ported steps run unchanged.
"""
from __future__ import annotations

import copy
import logging

import numpy as np

from stepline.core.context import ExecutionContext, ExecutionPhase

logger = logging.getLogger("stepline")


def _equal(a, b) -> bool:
    try:
        return bool(np.array_equal(np.asarray(a), np.asarray(b)))
    except Exception:  # noqa: BLE001 - objects NumPy cannot compare: fall back to ==
        return bool(a == b)


class NeuraxleStepAPI:
    """Neuraxle's spelling of step calls stepline has (mixed into every step)."""

    def __call__(self, data_inputs):
        """``step(x)`` is ``step.transform(x)``."""
        return self.transform(data_inputs)

    def with_context(self, context: ExecutionContext):
        """This step bound to ``context``: ``fit``/``transform``/``save`` use that context."""
        from stepline.core.with_context import StepWithContext
        return StepWithContext(self, context)

    def _invalidate(self):
        return self.invalidate()

    def _set_hyperparams(self, hyperparams):
        """Set this step's own values (the root level of ``hyperparams``); Neuraxle's apply target."""
        from stepline.hyperparams.space import RecursiveDict
        own = RecursiveDict(hyperparams)[None]
        return self.set_hyperparams(own) if own else self

    def _update_hyperparams(self, hyperparams):
        """Update this step's own values (the root level of ``hyperparams``), keeping the others;
        Neuraxle's ``apply("_update_hyperparams", hyperparams=...)`` target (its AutoML loop)."""
        from stepline.hyperparams.space import RecursiveDict
        own = RecursiveDict(hyperparams)[None]
        return self.update_hyperparams(own) if own else self

    # ----------------------------------------------------------- assertions
    def _assert(self, condition: bool, err_message: str, context: ExecutionContext | None = None) -> None:
        """Log ``err_message`` when ``condition`` is false and raise, except in the PROD phase."""
        if condition:
            return
        logger.error(err_message)
        phase = getattr(context, "execution_phase", ExecutionPhase.UNSPECIFIED)
        if phase != ExecutionPhase.PROD:
            raise AssertionError(err_message)

    def _assert_equals(self, a, b, err_message: str, context: ExecutionContext | None = None) -> None:
        self._assert(_equal(a, b), err_message, context)

    # ----------------------------------------------------------- handlers
    def handle_predict(self, data_container, context):
        """Transform in inference mode (train-only steps pass data through), as ``predict`` does."""
        from stepline.core.mode import inference
        with inference():
            return self.handle_transform(data_container, context)

    def handle_inverse_transform(self, data_container, context):
        """``inverse_transform`` on a data container."""
        inverse = getattr(self, "inverse_transform", None)
        if inverse is None:
            raise NotImplementedError(f"step {self.name!r} ({type(self).__name__}) defines no inverse_transform")
        data_container.data_inputs = inverse(data_container.data_inputs)
        return data_container

    # ----------------------------------------------------------- config
    def set_config(self, config):
        """Neuraxle's step config: settings that are not hyperparameters (never searched, not
        in ``get_hyperparams``). Keys of this step replace its config; ``child__key`` goes to
        that child. Returns self."""
        return self._set_config(config, replace=True)

    def update_config(self, config):
        """As :meth:`set_config`, keeping the keys not given."""
        return self._set_config(config, replace=False)

    def _set_config(self, config, replace: bool):
        from stepline.hyperparams.space import SEPARATOR, RecursiveDict
        flat = RecursiveDict(config).to_flat_dict()
        own = {key: value for key, value in flat.items() if SEPARATOR not in key}
        self.__dict__["_config"] = own if replace else {**self.__dict__.get("_config", {}), **own}
        children = {child.name: child for child in self.get_children()}
        routed: dict = {}
        for key, value in flat.items():
            if SEPARATOR in key:
                head, rest = key.split(SEPARATOR, 1)
                if head not in children:
                    raise KeyError(f"step {self.name!r} has no child {head!r} for config key {key!r}; "
                                   f"its children are {sorted(children)}")
                routed.setdefault(head, {})[rest] = value
        for name, sub in routed.items():
            children[name]._set_config(sub, replace)
        return self

    def get_config(self):
        """The config of this step and, under their names, of its descendants (a ``RecursiveDict``)."""
        from stepline.hyperparams.space import SEPARATOR, RecursiveDict
        out = RecursiveDict(dict(self.__dict__.get("_config", {})))
        for child in self.get_children():
            for key, value in child.get_config().to_flat_dict().items():
                dict.__setitem__(out, f"{child.name}{SEPARATOR}{key}", value)
        return out

    # ----------------------------------------------------------- mutation
    def will_mutate_to(self, new_base_step=None, new_method: str | None = None,
                       method_to_assign_to: str | None = None):
        """Record a mutation that the next :meth:`mutate` applies: become ``new_base_step``
        (when given), and/or have ``method_to_assign_to`` call ``new_method``. Returns self."""
        self.__dict__["_pending_mutation"] = (new_base_step, new_method, method_to_assign_to)
        return self

    def mutate(self, new_method: str = "inverse_transform", method_to_assign_to: str = "transform",
               warn: bool = False):
        """A copy in which ``method_to_assign_to`` calls ``new_method``, applied down the tree.

        ``step.mutate(new_method="transform_b", method_to_assign_to="transform")`` makes
        ``transform`` (and the handlers that call it) run ``transform_b``. A step on which
        :meth:`will_mutate_to` was called becomes what it recorded instead. Composite steps
        mutate their children; leaves without ``new_method`` stay as they are (logged when
        ``warn``). The original step is not changed.
        """
        pending = self.__dict__.get("_pending_mutation")
        if pending is not None:
            base, new_method, method_to_assign_to = pending
            new = copy.copy(base if base is not None else self)
            new.__dict__.pop("_pending_mutation", None)
            if new_method is None:
                return new
            method_to_assign_to = method_to_assign_to or "transform"
        else:
            new = copy.copy(self)
        children = new.get_children()
        if children:
            new._set_children([child.mutate(new_method, method_to_assign_to, warn) for child in children])
            return new
        method = getattr(type(new), new_method, None)
        if method is None:
            if warn:
                logger.warning("step %r has no method %r: not mutated", self.name, new_method)
            return new
        new.__dict__[method_to_assign_to] = method.__get__(new)
        return new


def neuraxle_apply(step, fn, ra=None, **kwargs):
    """Neuraxle's ``apply``: call ``fn(step)`` (or ``step.<fn>(**kwargs)``) on the tree.

    Keyword arguments that are mappings are split per child by their flat keys. Returns
    a ``RecursiveDict``: this step's result (a mapping is merged in, another value is
    kept under ``""``), and each child's under its name. Steps without the named method
    are skipped.
    """
    from stepline.hyperparams.space import RecursiveDict
    ra = ra if ra is not None else _RecursiveArguments(kwargs=kwargs)
    own = ra[None]
    if isinstance(fn, str):
        method = getattr(step, fn, None)
        result = method(*own.args, **own.kwargs) if method is not None else None
    else:
        result = fn(step)
    out = RecursiveDict()
    if isinstance(result, dict):
        out.update(result)
    elif result is not None:
        dict.__setitem__(out, "", result)
    for child in step.get_children():
        sub = neuraxle_apply(child, fn, ra=ra[child.name])
        for key, value in sub.items():
            dict.__setitem__(out, f"{child.name}__{key}" if key else child.name, value)
    return out


class _RecursiveArguments:
    """Arguments of a recursive call, split per child (Neuraxle's internal helper).

    ``ra[None]`` holds the values for the step itself; ``ra["child"]`` the ones under
    ``"child__"``, with that prefix removed. Mappings among the keyword arguments
    (hyperparameters) are split by their flat keys.
    """

    def __init__(self, ra: "_RecursiveArguments | None" = None, args=None, kwargs=None):
        if ra is not None:
            args, kwargs = ra.args, ra.kwargs
        self.args = list(args or [])
        self.kwargs = dict(kwargs or {})

    def __getitem__(self, child):
        from stepline.hyperparams.space import RecursiveDict
        kwargs = {}
        for key, value in self.kwargs.items():
            if isinstance(value, dict):
                flat = RecursiveDict(value).to_flat_dict()
                if child is None:
                    part = {k: v for k, v in flat.items() if "__" not in k}
                else:
                    prefix = f"{child}__"
                    part = {k[len(prefix):]: v for k, v in flat.items() if k.startswith(prefix)}
                kwargs[key] = type(value)(part) if isinstance(value, RecursiveDict) else part
            else:
                kwargs[key] = value
        return _RecursiveArguments(args=self.args, kwargs=kwargs)
