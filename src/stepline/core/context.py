"""The execution context: where steps save, which parents they run under, which phase."""
from __future__ import annotations

import os
import tempfile
from enum import Enum
from pathlib import Path


class ExecutionPhase(Enum):
    """What a pipeline run is for; steps may behave differently per phase."""

    UNSPECIFIED = "unspecified"
    PRETRAIN = "pretrain"
    TRAIN = "train"
    VALIDATION = "validation"
    TEST = "test"
    PROD = "prod"


class ExecutionMode(Enum):
    """Which call a context was made for (Neuraxle's ``ExecutionMode``)."""

    FIT_OR_FIT_TRANSFORM_OR_TRANSFORM = "fit_or_fit_transform_or_transform"
    FIT_OR_FIT_TRANSFORM = "fit_or_fit_transform"
    TRANSFORM = "transform"
    FIT = "fit"
    FIT_TRANSFORM = "fit_transform"
    INVERSE_TRANSFORM = "inverse_transform"


class _Root:
    """A root folder shared by a context and every context pushed from it.

    With no folder given, a temporary one is created on first use only, so
    creating a context has no side effect.
    """

    __slots__ = ("_path", "_string")

    def __init__(self, path):
        self._path = None if path is None else Path(os.fspath(path))
        self._string = None

    def get(self) -> Path:
        if self._path is None:
            self._path = Path(tempfile.mkdtemp(prefix="stepline-"))
        return self._path

    def get_string(self) -> str:
        """:meth:`get` as a string (made once)."""
        if self._string is None:
            self._string = os.fspath(self.get())
        return self._string


class ExecutionContext:
    """Root folder, stack of parent steps, execution phase and stripped saver.

    ``ExecutionContext(root).load("name")`` loads a saved step; ``push(step)``
    returns the context a child of ``step`` runs in.
    """

    __slots__ = ("_root", "parents", "execution_phase", "_stripped_saver", "services", "execution_mode", "_path")

    def __init__(self, root=None, execution_phase: ExecutionPhase = ExecutionPhase.UNSPECIFIED,
                 stripped_saver=None, parents: tuple = (), execution_mode=None, services=None):
        self._root = root if isinstance(root, _Root) else _Root(root)
        self.parents = tuple(parents)
        self.execution_phase = execution_phase
        self._stripped_saver = stripped_saver
        self.execution_mode = execution_mode
        self.services = services if services is not None else {}
        self._path = None

    @staticmethod
    def of(context) -> "ExecutionContext":
        """``context`` itself, or a fresh context when it is ``None``."""
        return context if context is not None else ExecutionContext()

    @property
    def root(self) -> Path:
        """The root folder (a temporary folder is made on first access if none was given)."""
        return self._root.get()

    @property
    def given_root(self) -> Path | None:
        """The root folder if one was given or already made, else ``None`` (makes nothing)."""
        return self._root._path

    @property
    def stripped_saver(self):
        """The saver that runs last on what the step's own savers left (joblib by default)."""
        if self._stripped_saver is None:
            from stepline.saving.savers import JoblibStepSaver
            self._stripped_saver = JoblibStepSaver()
        return self._stripped_saver

    def push(self, step) -> "ExecutionContext":
        """The context for the children of ``step``."""
        cx = ExecutionContext.__new__(ExecutionContext)
        cx._root = self._root
        cx.parents = self.parents + (step,)
        cx.execution_phase = self.execution_phase
        cx._stripped_saver = self._stripped_saver
        cx.execution_mode = self.execution_mode
        cx.services = self.services
        cx._path = None
        return cx

    def pop(self) -> "ExecutionContext":
        """The context of the last parent's own parent."""
        return self._copy(parents=self.parents[:-1])

    def with_root(self, root) -> "ExecutionContext":
        """The same context over another root folder."""
        return self._copy(root=root)

    def set_execution_phase(self, phase: ExecutionPhase) -> "ExecutionContext":
        """A copy of this context in another phase."""
        return self._copy(execution_phase=phase)

    def _copy(self, **changes) -> "ExecutionContext":
        fields = dict(root=self._root, execution_phase=self.execution_phase, stripped_saver=self._stripped_saver,
                      parents=self.parents, execution_mode=self.execution_mode, services=self.services)
        fields.update(changes)
        return ExecutionContext(**fields)

    # ---------------------------------------------------------------- services
    # A service locator as in Neuraxle: objects registered by type or name, shared by
    # every context pushed from this one.
    def register_service(self, service_abstraction, service_instance) -> "ExecutionContext":
        """Make ``service_instance`` findable under ``service_abstraction`` (a type or a name)."""
        self.services[service_abstraction] = service_instance
        return self

    def set_service_locator(self, services: dict) -> "ExecutionContext":
        """Replace the registered services by ``services`` (``{type or name: instance}``)."""
        self.services.clear()
        self.services.update(services)
        return self

    def get_services(self) -> dict:
        """The services registered on this context, by abstraction."""
        return self.services

    def has_service(self, service_abstraction) -> bool:
        """Whether a service is registered under ``service_abstraction``."""
        return service_abstraction in self.services

    def get_service(self, service_abstraction):
        """The service registered under ``service_abstraction``; ``KeyError`` naming the known ones."""
        try:
            return self.services[service_abstraction]
        except KeyError:
            known = [getattr(k, "__name__", k) for k in self.services]
            raise KeyError(f"no service registered for {getattr(service_abstraction, '__name__', service_abstraction)!r}; "
                           f"registered: {known}") from None

    # ------------------------------------------------------------ services as a tree (Neuraxle)
    @property
    def name(self) -> str:
        """``"ExecutionContext"``: a context is named as Neuraxle's services are."""
        return type(self).__name__

    def get_name(self) -> str:
        """``"ExecutionContext"`` (see :attr:`name`)."""
        return self.name

    def get_children(self) -> list:
        """The registered services that are steps (they have ``apply``), in registration order."""
        return [s for s in self.services.values() if hasattr(s, "apply") and hasattr(s, "get_children")]

    def apply(self, fn, ra=None, **kwargs):
        """Neuraxle's ``CX().apply(fn)``: ``fn(context)`` and, under each step service's name,
        that service's ``apply`` (a ``RecursiveDict``). The context itself is not a step."""
        from stepline.core.neuraxle_api import neuraxle_apply
        return neuraxle_apply(self, fn, ra=ra, **kwargs)

    @property
    def logger(self):
        """The logger of the step this context runs (Neuraxle's ``context.logger``): a
        ``LoggerAdapter`` over ``logging.getLogger("stepline.<parent names>")`` that also keeps
        its messages in the process's history (:mod:`stepline.logging.history`)."""
        import logging
        from stepline.logging.history import ContextLogger
        return ContextLogger(logging.getLogger(".".join(["stepline"] + self.get_names())), {})

    def get_names(self) -> list[str]:
        """The names of the parent steps, outermost first."""
        return [p.name for p in self.parents]

    def get_path(self, include_root: bool = True) -> Path:
        """``root/<parent names…>``: the folder of the innermost parent."""
        if not include_root:
            return Path(*self.get_names()) if self.parents else Path()
        names, root = self.get_names(), self.root
        cached = self._path  # (a save or load asks each step's context several times)
        if cached is not None and cached[0] is root and cached[1] == names:
            return cached[2]
        path = root.joinpath(*names)
        self._path = (root, names, path)
        return path

    def get_folder(self) -> str:
        """:meth:`get_path` as a string, joined without building a ``Path`` (a load asks it
        for every step: a ``Path`` costs more to build than a tiny step's manifest to read)."""
        root = self._root.get_string()
        if not self.parents:
            return root
        names = os.sep.join([p.name for p in self.parents])
        if root == os.curdir:  # (spelled as Path joins it: ``Path(".") / "p"`` is ``p``)
            return names
        return (root[:-1] if root.endswith(os.sep) else root) + os.sep + names

    def mkdir(self) -> Path:
        """Create :meth:`get_path` (and its parents) and return it."""
        path = self.get_path()
        path.mkdir(parents=True, exist_ok=True)
        return path

    def load(self, path: str, mmap_mode: str | None = None, verify=True, trusted=None):
        """Load the step saved at ``root/<path>`` (``"name"`` or ``"name/child"``).

        ``trusted=True`` runs whatever the dump holds (by-value classes included) even when
        it is not signed by a trusted key: only for dumps from someone you trust (docs/trust.md).
        """
        from stepline.saving import load_step
        return load_step(self, path, mmap_mode=mmap_mode, verify=verify, trusted=trusted)

    def __repr__(self) -> str:
        root = self._root._path
        return (f"ExecutionContext(root={str(root) if root else None!r}, "
                f"parents={self.get_names()}, phase={self.execution_phase.name})")


CX = ExecutionContext
