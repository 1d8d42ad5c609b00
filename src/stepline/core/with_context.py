"""``StepWithContext``: a step bound to an execution context (Neuraxle's ``with_context``)."""
from __future__ import annotations

from stepline.core.composite import MetaStep


class StepWithContext(MetaStep):
    """Wraps a step with the context its calls run under.

    ``step.with_context(CX(root))`` returns one: plain ``fit``/``transform`` and
    ``save()`` with no context use that context; ``get_step()`` is the wrapped step.
    It saves and loads as the step it wraps would.
    """

    def __init__(self, wrapped, context, name=None, savers=None):
        super().__init__(wrapped, name=name if name is not None else wrapped.name, savers=savers)
        self.context = context

    def _plain_call_context(self):
        return self.context

    def setup(self, context=None):
        return super().setup(context if context is not None else self.context)

    def save(self, context=None, full_dump: bool = False):
        return self.wrapped.save(context if context is not None else self.context, full_dump=full_dump)

    def handle_fit(self, data_container, context):
        self.wrapped = self.wrapped.handle_fit(data_container, self.context)
        return self

    def handle_transform(self, data_container, context):
        return self.wrapped.handle_transform(data_container, self.context)

    def handle_fit_transform(self, data_container, context):
        self.wrapped, data_container = self.wrapped.handle_fit_transform(data_container, self.context)
        return self, data_container

    def __getstate__(self):
        state = super().__getstate__()
        state.pop("context", None)  # a context holds a root folder, not step state
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        self.__dict__.setdefault("context", None)
