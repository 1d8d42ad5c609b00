"""Saving and loading steps: savers, manifests, integrity checks, atomic dumps."""
from stepline.saving.errors import (CorruptFileError, IncompatibleDumpError, ManifestError, MissingFileError,
                                    MixedDumpError, NotADumpError, NotAStepError, SaveError, StepLoadError,
                                    UnpicklingError,
                                    VersionMismatchWarning)
from stepline.saving.savers import BaseSaver, ChildrenSaver, JoblibStepSaver


def save_step(step, context=None, full_dump: bool = False, mark_saved: bool = True):
    """Save ``step`` under ``context`` (see :mod:`stepline.saving.procedure`)."""
    from stepline.saving.procedure import save_step as save
    return save(step, context, full_dump=full_dump, mark_saved=mark_saved)


def load_step(context, path, mmap_mode=None, verify=True, trusted=None):
    """Load the step saved at ``context.root/path`` (see :mod:`stepline.saving.procedure`)."""
    from stepline.saving.procedure import load_step as load
    return load(context, path, mmap_mode=mmap_mode, verify=verify, trusted=trusted)


__all__ = [
    "save_step", "load_step", "BaseSaver", "JoblibStepSaver", "ChildrenSaver", "StepLoadError",
    "NotADumpError", "ManifestError", "MissingFileError", "CorruptFileError", "IncompatibleDumpError",
    "UnpicklingError", "NotAStepError", "VersionMismatchWarning", "SaveError", "MixedDumpError",
]
