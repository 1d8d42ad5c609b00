"""Savers: each strips from a step what it saves itself, and puts it back on load.

``step.save(cx)`` applies ``reversed([cx.stripped_saver] + step.savers)`` to a
shallow copy of the step: every custom saver first (last one first), each
returning a more stripped copy, then the stripped saver writes what remains.
Loading runs the stripped saver first, then each saver whose ``can_load`` is true.
A saver receives the context of the step's own folder (``context.get_path()``).
"""
from __future__ import annotations

import functools
import os
from abc import ABC, abstractmethod


class BaseSaver(ABC):
    """Saves and loads the part of a step that it owns.

    ``save_step`` must not change objects the live step shares with the copy it is
    given: assign new values to attributes (``step.queue = None``), do not mutate
    them in place.
    """

    @abstractmethod
    def save_step(self, step, context):
        """Write what this saver owns into ``context.get_path()``; return the stripped step."""

    @abstractmethod
    def can_load(self, step, context) -> bool:
        """Whether :meth:`load_step` can restore ``step`` from ``context.get_path()``."""

    @abstractmethod
    def load_step(self, step, context):
        """Restore what :meth:`save_step` stripped; return the step."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def __eq__(self, other) -> bool:
        return type(self) is type(other) and vars(self) == vars(other)

    def __hash__(self) -> int:
        return hash(type(self))


class JoblibStepSaver(BaseSaver):
    """The default stripped saver: writes the whole remaining step to ``step.pkl``.

    The name is the seed's. It writes with cloudpickle (protocol 5), so classes
    defined in ``__main__`` travel by value, and every large array out of band as a
    raw, uncompressed buffer file, so ``load(..., mmap_mode="r")`` maps it.
    """

    def save_step(self, step, context):
        inline, write_object, procedure = _save_helpers()
        folder = procedure.stripped_saver_folder(context)
        try:
            records = write_object(step, folder, inline_below=inline.INLINE_MAX_BYTES)
        except OSError as error:  # disk full, file too large, permissions: not a pickling problem
            from stepline.saving.errors import SaveError
            raise SaveError(f"{error.filename or folder}: cannot write step {step.name!r} "
                            f"({type(step).__name__}): {error.strerror or error}") from error
        except Exception as error:
            raise _save_error(step, context, error) from error
        procedure.report_records(context, records, folder)
        return step

    def can_load(self, step, context) -> bool:
        from stepline.saving.inline import stream_record
        from stepline.saving.manifest import read_manifest
        from stepline.saving.procedure import current_options
        try:
            manifest = current_options().manifests.get(context.get_folder())  # read by this load
        except LookupError:
            manifest = None
        manifest = manifest or read_manifest(context.get_folder())
        return stream_record(manifest, STREAM_NAME) is not None

    def load_step(self, step, context):
        inline, objectfile, current_options = _load_helpers()
        options = current_options()
        folder = context.get_folder()
        manifest = options.manifests[folder]
        files = manifest["files"]
        preread = options.preread.pop(folder, None)
        record = manifest.get(inline.INLINE_FIELD, _NONE).get(STREAM_NAME)
        if record is None:
            where = os.path.join(folder, STREAM_NAME)
        else:  # decoded and checked against its digest before anything reads it
            where = inline.Label(folder, STREAM_NAME)
            stream = inline.decode(folder, STREAM_NAME, record)
        if record is not None and not files:  # a tiny step: its pickle alone, nothing else to read
            loaded = objectfile.loads_verified(where, stream, record, restricted=not options.trusted)
        else:
            pickled = {k: v for k, v in files.items() if k == STREAM_NAME or k.startswith("buffer-")}
            if record is not None:
                pickled[STREAM_NAME] = record
                preread = {**(preread or _NONE), STREAM_NAME: stream}
            loaded = objectfile.read_object(folder, pickled, mmap_mode=options.mmap_mode, verify=False,
                                            restricted=not options.trusted, check_stream=not options.trust_override,
                                            preread=preread, stream_label=where)
        _check_is_step(loaded, where)
        return loaded


STREAM_NAME = "step.pkl"
_NONE: dict = {}


@functools.lru_cache(maxsize=1)
def _save_helpers():
    """What saving needs from modules that import this one (imported once, on first use)."""
    from stepline.saving import inline, procedure
    from stepline.saving.objectfile import write_object
    return inline, write_object, procedure


@functools.lru_cache(maxsize=1)
def _step_class():
    from stepline.core.step import BaseTransformer
    return BaseTransformer


@functools.lru_cache(maxsize=1)
def _load_helpers():
    """What loading needs from modules that import this one (imported once, on first use)."""
    from stepline.saving import inline, objectfile
    from stepline.saving.procedure import current_options
    return inline, objectfile, current_options


def _check_is_step(loaded, path) -> None:
    """Raise :class:`NotAStepError` unless the unpickled ``loaded`` is a step."""
    if isinstance(loaded, _step_class()):
        return
    from stepline.saving.errors import NotAStepError
    shown = repr(loaded)
    shown = shown if len(shown) <= 40 else shown[:37] + "..."
    raise NotAStepError(f"{path}: holds {type(loaded).__name__} {shown}, not a step: the file was "
                        f"replaced, or the dump was not written by stepline")


def _save_error(step, context, error):
    """A :class:`SaveError` naming the attribute of ``step`` that cannot be pickled."""
    import cloudpickle

    from stepline.saving.errors import SaveError
    culprit = None
    for attribute, value in vars(step).items():
        try:
            cloudpickle.dumps(value)
        except Exception:
            culprit = attribute
            break
    where = f"its attribute {culprit!r} ({type(getattr(step, culprit)).__name__})" if culprit else "it"
    what = repr(culprit) if culprit else "it"
    original = context.parents[-1] if context.parents else step  # ``step`` is the copy being saved
    if original.is_initialized:  # most likely made by setup: teardown releases it
        advice = (f"The step is set up, and {what} is likely something its setup() created: save it "
                  f"after teardown() (step.teardown(); step.save(...)), or add a saver to the step "
                  f"that saves and strips {what} (see docs/saving.md).")
    else:
        advice = (f"Add a saver to the step that saves and strips it (see docs/saving.md), "
                  f"or create it in setup() and release it in teardown().")
    return SaveError(
        f"{context.get_path()}: cannot save step {step.name!r} ({type(step).__name__}): {where} cannot be "
        f"pickled ({type(error).__name__}: {error}). {advice}")


class ChildPlaceholder:
    """Stands for a child step in a saved parent; the child lives in its own folder."""

    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name

    def __getstate__(self):
        return self.name

    def __setstate__(self, state):
        self.name = state

    def __repr__(self) -> str:
        return f"ChildPlaceholder({self.name!r})"

    def _repr_lines(self, indent: str) -> list[str]:
        return [indent + repr(self)]  # a stripped parent's repr shows where its children went


class ChildrenSaver(BaseSaver):
    """Saves each child of a pipeline or wrapper in its own sub-folder, with its own savers."""

    def save_step(self, step, context):
        from stepline.saving.procedure import save_children
        children = step.get_children()
        save_children(children, context)
        step._set_children([ChildPlaceholder(child.name) for child in children])
        return step

    def can_load(self, step, context) -> bool:
        return any(isinstance(c, ChildPlaceholder) for c in step.get_children())

    def load_step(self, step, context):
        from stepline.saving.procedure import load_children
        children = step.get_children()
        placeholders = [child.name for child in children if isinstance(child, ChildPlaceholder)]
        loaded = iter(load_children(placeholders, context))
        step._set_children([next(loaded) if isinstance(child, ChildPlaceholder) else child for child in children])
        return step


# Names kept from the seed's library for pipelines and wrappers.
TruncableJoblibStepSaver = ChildrenSaver
MetaStepJoblibStepSaver = ChildrenSaver
