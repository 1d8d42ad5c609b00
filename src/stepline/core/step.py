"""The step: its lifecycle, name, savers, tree walk and data-flow handlers."""
from __future__ import annotations

from stepline.core.context import ExecutionContext
from stepline.core.data import DataContainer
from stepline.core.handler_hooks import install_handler_hooks
from stepline.core.lifecycle import SETUP_CONTEXT, install_lifecycle_guards, trivial_fit
from stepline.core.mode import _CALL_MODE
from stepline.core.neuraxle_api import NeuraxleStepAPI
from stepline.core.naming import validate_name
from stepline.core.step_hyperparams import HyperparamsMixin
from stepline.core.transitions import LIFECYCLE_STATE
from stepline.hyperparams.space import SEPARATOR, HyperparameterSamples, HyperparameterSpace

_LIFECYCLE_FLAGS = ("is_initialized", LIFECYCLE_STATE, SETUP_CONTEXT,
                    "_stepline_saved_to")  # where this process saved the step: not state


class BaseTransformer(HyperparamsMixin, NeuraxleStepAPI):
    """The root of every step: lifecycle, hyperparameters, savers, handlers.

    Subclass it (or :class:`BaseStep`) and override ``transform`` (and ``fit`` when
    the step learns). Lifecycle: ``__init__`` → ``set_hyperparams`` → ``setup`` →
    ``fit``/``transform`` → ``save`` → ``teardown``. ``__init__`` is cheap and has no
    side effects; heavy resources belong in ``setup``, which runs by itself before
    the first ``fit``/``transform``.
    """

    _needs_fit = False
    is_initialized = False
    is_fitted = False
    #: Bumped by every change; a save records it per destination (see stepline.saving).
    _stepline_revision = 0

    @property
    def is_train(self) -> bool:
        """Training (``True``) or inference mode, as the running call sees it.

        The step's own mode (``set_train``), unless the running call imposes one:
        inside ``predict`` every step is in inference (see ``stepline.core.mode``).
        """
        mode = _CALL_MODE.get()
        return self.__dict__.get("is_train", True) if mode is None else mode

    @is_train.setter
    def is_train(self, value: bool) -> None:
        self.__dict__["is_train"] = bool(value)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        install_lifecycle_guards(cls)
        install_handler_hooks(cls)  # Neuraxle's _will_process/_fit_data_container… when a class defines them

    def __init__(self, hyperparams=None, hyperparams_space=None, name=None, savers=None):
        self.name = validate_name(type(self).__name__ if name is None else name)
        self._has_default_name = name is None
        self.hyperparams = HyperparameterSamples(hyperparams or {})
        self.hyperparams_space = HyperparameterSpace(hyperparams_space or {})
        self.savers = list(savers) if savers is not None else self._default_savers()

    def __getattr__(self, item):
        # Steps whose __init__ skipped super().__init__ still get their defaults.
        if item in _LAZY_DEFAULTS:
            value = _LAZY_DEFAULTS[item](self)
            object.__setattr__(self, item, value)
            return value
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {item!r}")

    def _default_savers(self) -> list:
        return []

    # ---------------------------------------------------------------- lifecycle
    def setup(self, context: ExecutionContext | None = None) -> "BaseTransformer":
        """Create heavy resources (models, queues, GPU memory). Idempotent.

        Override it to create your own; it runs once before the first
        ``fit``/``transform``. ``with step.setup(cx):`` tears down on exit.
        """
        return self

    def teardown(self) -> "BaseTransformer":
        """Release what :meth:`setup` created. Idempotent; setup may run again later."""
        return self

    def _lazy_setup(self) -> None:
        self.setup(ExecutionContext())

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.teardown()
        return False

    # --------------------------------------------------------------- learning
    @trivial_fit
    def fit(self, data_inputs, expected_outputs=None) -> "BaseTransformer":
        """Learn from the data and return the fitted step (this one learns nothing)."""
        return self

    def transform(self, data_inputs):
        """Return the transformed ``data_inputs``."""
        raise NotImplementedError(f"step {self.name!r} ({type(self).__name__}) defines no transform")

    @trivial_fit
    def fit_transform(self, data_inputs, expected_outputs=None):
        """Fit, then transform: returns ``(fitted_step, outputs)``."""
        step = self.fit(data_inputs, expected_outputs)
        return step, step.transform(data_inputs)

    def predict(self, data_inputs):
        """:meth:`transform` in inference mode (train-only steps pass data through).

        The mode is the call's, not the tree's: other threads' calls keep their own.
        """
        return self.transform(data_inputs)

    # --------------------------------------------------------------- handlers
    def handle_fit(self, data_container: DataContainer, context: ExecutionContext):
        """Fit on a data container; returns the fitted step."""
        return self.fit(data_container.data_inputs, data_container.expected_outputs)

    def handle_transform(self, data_container: DataContainer, context: ExecutionContext) -> DataContainer:
        """Transform a data container; returns the container with new ``data_inputs``."""
        data_container.data_inputs = self.transform(data_container.data_inputs)
        return data_container

    def handle_fit_transform(self, data_container: DataContainer, context: ExecutionContext):
        """Fit and transform a data container; returns ``(fitted_step, container)``."""
        step, data_container.data_inputs = self.fit_transform(
            data_container.data_inputs, data_container.expected_outputs)
        return step, data_container

    # ------------------------------------------------------------------ tree
    def get_children(self) -> tuple:
        """The steps this step holds directly (none for a leaf)."""
        return ()

    def apply(self, fn, context: ExecutionContext | None = None, include_self: bool = True, **kwargs) -> dict:
        """Call ``fn(step, context)`` on this step and every descendant, parents first.

        Returns ``{path: result}`` where ``path`` joins names with ``__`` relative to
        this step (``""`` is this step). Every recursive feature goes through it.
        Neuraxle's forms also work: ``apply("method_name", **kwargs)`` and
        ``apply(lambda step: ...)`` (see :func:`stepline.core.neuraxle_api.neuraxle_apply`).
        """
        if isinstance(fn, str) or kwargs or _takes_one_argument(fn):
            from stepline.core.neuraxle_api import neuraxle_apply
            return neuraxle_apply(self, fn, **kwargs)
        out: dict = {}
        self._apply_into(fn, ExecutionContext.of(context), "", out, include_self)
        return out

    def _apply_into(self, fn, context, path: str, out: dict, include_self: bool) -> None:
        if include_self:
            out[path] = fn(self, context)
        children = self.get_children()
        if children:
            child_context = context.push(self)
            prefix = path + SEPARATOR if path else ""
            for child in children:
                child._apply_into(fn, child_context, prefix + child.name, out, True)

    # ------------------------------------------------------------ identity
    def set_name(self, name: str) -> "BaseTransformer":
        """Rename the step (marks it changed); returns it."""
        self.name = validate_name(name)
        self._has_default_name = False
        self._invalidated = True
        return self

    def get_name(self) -> str:
        """The step's name (also ``name``)."""
        return self.name

    def set_train(self, is_train: bool = True) -> "BaseTransformer":
        """Switch this step and its descendants to training or inference; returns it."""
        self.apply(lambda step, cx: setattr(step, "is_train", bool(is_train)))
        return self

    # ----------------------------------------------------------- invalidation
    def invalidate(self) -> "BaseTransformer":
        """Mark the step changed since its last save."""
        self._invalidated = True
        return self

    @property
    def _invalidated(self) -> bool:
        """Changed since the last save or load (any destination); setting it bumps the revision."""
        return self.__dict__.get("_stepline_changed", False)

    @_invalidated.setter
    def _invalidated(self, changed: bool) -> None:
        self.__dict__["_stepline_changed"] = bool(changed)
        if changed:
            self.__dict__["_stepline_revision"] = self._stepline_revision + 1

    @property
    def is_invalidated(self) -> bool:
        """Whether this step or any descendant changed since its last save."""
        return any(self.apply(lambda step, cx: step._invalidated).values())

    # ------------------------------------------------------------------ savers
    def get_savers(self) -> list:
        """The step's own savers, applied in reverse order on save (the list itself)."""
        return self.savers

    def set_savers(self, savers) -> "BaseTransformer":
        """Replace the step's savers; returns the step."""
        self.savers = list(savers)
        self._invalidated = True
        return self

    def add_saver(self, saver) -> "BaseTransformer":
        """Append a saver (it runs before the ones already there on save); returns the step."""
        self.savers.append(saver)
        self._invalidated = True
        return self

    def save(self, context: ExecutionContext | None = None, full_dump: bool = False):
        """Save into ``context.root/<parents…>/<name>/`` through the savers (DESIGN §5)."""
        from stepline.saving import save_step
        return save_step(self, context, full_dump=full_dump)

    def to_sklearn(self):
        """A scikit-learn estimator view of this step (for ``cross_val_score``, ``GridSearchCV``)."""
        from stepline.steps.sklearn import to_sklearn
        return to_sklearn(self)

    # -------------------------------------------------------------- pickling
    def __getstate__(self):
        state = dict(self.__dict__)
        for flag in _LIFECYCLE_FLAGS:
            state.pop(flag, None)  # lifecycle flags are not saved state
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.__dict__.pop(LIFECYCLE_STATE, None)  # a copy never shares its original's lock

    # ----------------------------------------------------------------- repr
    def __repr__(self) -> str:
        return "\n".join(self._repr_lines(""))

    def _repr_lines(self, indent: str) -> list[str]:
        hp = dict(self._get_own_hyperparams())
        head = f"{indent}{type(self).__name__}(name={self.name!r}"
        head += f", hyperparams={hp!r}" if hp else ""
        children = self.get_children()
        if not children:
            return [head + ")"]
        lines = [head + ", ["]
        for child in children:
            child_lines = child._repr_lines(indent + "    ")
            child_lines[-1] += ","
            lines.extend(child_lines)
        lines.append(indent + "])")
        return lines


def _takes_one_argument(fn) -> bool:
    """Whether ``fn`` is called with the step alone (Neuraxle's ``apply(lambda step: ...)``)."""
    import inspect
    try:
        params = [p for p in inspect.signature(fn).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty]
    except (TypeError, ValueError):
        return False
    return len(params) == 1


class BaseStep(BaseTransformer):
    """A step that may learn: override ``fit`` (return ``self``) and ``transform``."""


_LAZY_DEFAULTS = {
    "name": lambda step: type(step).__name__,
    "_has_default_name": lambda step: True,
    "hyperparams": lambda step: HyperparameterSamples(),
    "hyperparams_space": lambda step: HyperparameterSpace(),
    "savers": lambda step: step._default_savers(),
}

install_lifecycle_guards(BaseTransformer)
