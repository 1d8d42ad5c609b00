"""Where a search writes, checked before it runs: the Optuna storage and ``save_best_to``.

A path (or ``sqlite:///`` URL) is checked before Optuna opens it: its folder must exist and
be a folder, and a file already there must be an SQLite database (Optuna would otherwise
fail deep in SQLAlchemy, or create tables in a file that is something else). Any error
opening the study (a locked file, a bad URL) is re-raised as a ``ValueError`` naming the
storage and the study.
"""
from __future__ import annotations

import os
from pathlib import Path

_SQLITE_HEADER = b"SQLite format 3\x00"
_SQLITE_PREFIX = "sqlite:///"


def check_sqlite_path(url: str) -> None:
    """ValueError naming ``url`` if it is an SQLite file that cannot hold a study."""
    if not url.startswith(_SQLITE_PREFIX) or url == _SQLITE_PREFIX + ":memory:":
        return
    path = Path(url[len(_SQLITE_PREFIX):])
    for folder in path.parents:
        if folder.exists() and not folder.is_dir():
            raise ValueError(f"AutoML: storage {url!r}: {folder} is a file, not a folder")
        if folder.is_dir():
            break
    if not path.parent.is_dir():
        raise ValueError(f"AutoML: storage {url!r}: the folder {path.parent} does not exist")
    if path.is_dir():
        raise ValueError(f"AutoML: storage {url!r}: {path} is a folder, not an SQLite file")
    if path.is_file() and path.stat().st_size > 0:
        with open(path, "rb") as file:
            header = file.read(len(_SQLITE_HEADER))
        if header != _SQLITE_HEADER:
            raise ValueError(f"AutoML: storage {url!r}: {path} is not an SQLite database "
                             f"(it starts with {header[:16]!r}); left as it is")


def open_study(optuna, storage, name, sampler, pruner):
    """``optuna.create_study`` (loading the study if it exists), errors naming the storage."""
    if isinstance(storage, str):
        check_sqlite_path(storage)
    try:
        return optuna.create_study(storage=storage, study_name=name, load_if_exists=True,
                                   direction="maximize", sampler=sampler, pruner=pruner)
    except Exception as error:  # noqa: BLE001 - SQLAlchemy's errors, re-raised naming the storage
        reason = " ".join(str(error).split("\n")[:1])
        locked = "locked" in reason
        hint = " (locked by another process)" if locked and "locked by" not in reason else ""
        raise ValueError(f"AutoML: cannot open study {name!r} in storage {_shown(storage)}{hint}: "
                         f"{type(error).__name__}: {reason}") from error


def _shown(storage) -> str:
    return repr(os.fspath(storage)) if isinstance(storage, (str, os.PathLike)) else type(storage).__name__


def check_destination(folder, name: str) -> None:
    """ValueError naming ``save_best_to`` if the best pipeline could not be saved there, checked
    before the search runs: a file on the way, or ``folder/name`` something else than a dump."""
    from stepline.saving.atomic import refuse_foreign
    from stepline.saving.errors import SaveError
    path = Path(folder).absolute()
    for parent in (path, *path.parents):
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"AutoML: save_best_to={os.fspath(folder)!r}: {parent} is a file, not a folder")
            break
    try:
        refuse_foreign(path / name)
    except SaveError as error:
        raise ValueError(f"AutoML: save_best_to={os.fspath(folder)!r}: {error}") from error


def storage_failure(error: BaseException, storage) -> Exception | None:
    """A ``RuntimeError`` naming ``storage`` if ``error`` (raised while the search ran) is the
    storage failing (SQLAlchemy's error, or Optuna's wrapping of it), else None."""
    import optuna
    try:
        from sqlalchemy.exc import SQLAlchemyError
    except ImportError:  # pragma: no cover - Optuna's RDB storage needs SQLAlchemy
        SQLAlchemyError = ()  # noqa: N806
    failures = (optuna.exceptions.StorageInternalError, SQLAlchemyError)
    chain, cause = [], error
    while cause is not None and cause not in chain:
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    if not any(isinstance(e, failures) for e in chain):
        return None
    reason = str(chain[-1]).split("\n")[0]
    hint = " (locked by another process)" if "locked" in reason and "locked by" not in reason else ""
    return RuntimeError(f"AutoML: the storage {_shown(storage)} failed while the search ran{hint}: "
                        f"{type(chain[-1]).__name__}: {reason}; the trials told so far are kept: "
                        f"run the same call again to resume")
