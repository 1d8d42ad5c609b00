"""Errors and warnings raised while loading a step dump.

Every message starts with the path concerned, then says what is wrong and, where it
helps, what to do about it. All load errors derive from :class:`StepLoadError`, so
``except StepLoadError`` catches every way a dump can fail to load.
"""

from __future__ import annotations


class StepLoadError(Exception):
    """A step dump could not be loaded."""


class NotADumpError(StepLoadError):
    """The folder is missing, is not a folder, or holds no stepline manifest."""


class ManifestError(StepLoadError):
    """The manifest is unreadable, invalid JSON, of a foreign format or a newer version."""


class MixedDumpError(StepLoadError):
    """A step folder's manifest is not the one its parent's manifest lists (format v2):
    the folder comes from another save, or was changed after it."""


class MissingFileError(StepLoadError):
    """A file listed in the manifest is absent."""


class CorruptFileError(StepLoadError):
    """A file of the dump is not what stepline wrote: its size or digest (BLAKE3, SHA-256 in
    v1 dumps) differs from its manifest record, or it is a FIFO, a folder, a link or garbage
    where stepline writes a regular file (a stat cache, a lock file)."""


class IncompatibleDumpError(StepLoadError):
    """The dump cannot load in this interpreter (e.g. code pickled by value under another Python)."""


class UnpicklingError(StepLoadError):
    """A verified pickle still failed to load; the original exception is chained."""


class NotAStepError(UnpicklingError):
    """A verified pickle loaded, but into something that is not a step (e.g. the number 42)."""


class VersionMismatchWarning(UserWarning):
    """A package's version differs from the one the dump was saved with."""


class InterruptedSaveWarning(UserWarning):
    """A dump is being loaded from the copy an interrupted save left behind."""


class SaveError(Exception):
    """A step could not be saved: the message names the step, its folder and the attribute at fault."""
