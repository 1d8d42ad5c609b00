"""``AutoMLContext`` (Neuraxle's ``metaopt.context``): an execution context for tuning runs."""
from __future__ import annotations

from stepline.core.context import ExecutionContext


class AutoMLContext(ExecutionContext):
    """An :class:`ExecutionContext`; ``AutoMLContext.from_context(cx)`` copies one."""

    __slots__ = ()

    @classmethod
    def from_context(cls, context: ExecutionContext | None = None) -> "AutoMLContext":
        context = context if context is not None else ExecutionContext()
        return cls(context._root, context.execution_phase, context._stripped_saver, context.parents,
                   context.execution_mode, context.services)
