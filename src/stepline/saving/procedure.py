"""Saving and loading a step tree: which steps to write, in which order, where.

``save_step`` walks the tree through the savers (a pipeline's children are saved
by its ``ChildrenSaver``); ``load_step`` reads it back. A step lives in
``root/<parent names…>/<name>/`` with a ``stepline.json`` manifest next to its files.
"""
from __future__ import annotations

import contextlib
import contextvars
import copy
import os
import stat
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from stepline.core.context import ExecutionContext
from stepline.saving import manifest as mf
from stepline.saving import journal, spare, writer
from stepline.saving.atomic import atomic_folder, is_overlay_for, reading_lock, resolve_dump_folder
from stepline.saving.destinations import (never_saved_nor_changed, record_saved, record_written, unchanged_at,
                                          unchanged_children)
from stepline.saving.inline import INLINE_FIELD, encode_record
from stepline.saving.errors import (CorruptFileError, MissingFileError, NotADumpError, SaveError, StepLoadError,
                                    VersionMismatchWarning)
from stepline.saving.integrity import cached_records, verify_files
from stepline.saving.names import check_tree_names
from stepline.saving.safe_open import check_unchanged, open_checked, open_regular
from stepline.saving.savers import ChildPlaceholder, ChildrenSaver, JoblibStepSaver
from stepline.saving.side_by_side import verify_side_by_side
from stepline.trust import gate
from stepline.trust.signing import sign_dump


@dataclass
class _Options:
    full_dump: bool = True
    mmap_mode: str | None = None
    verify: object = True
    destination: Path | None = None  # saving: the final folder of the saved step
    staged: Path | None = None  # saving: where that folder is being written
    staged_path: str | None = None  # (the same, as a string)
    trusted: bool = True  # False: every pickle goes through the restricted unpickler (DESIGN §5a)
    verified: set = field(default_factory=set)  # folders whose files were verified already
    trust_override: bool = False  # load(..., trusted=True)
    manifests: dict = field(default_factory=dict)
    reported: dict = field(default_factory=dict)  # saving: folder (str) -> records its savers reported
    written: dict = field(default_factory=dict)  # folder -> digest of the manifest written or read
    children: dict = field(default_factory=dict)  # loading: folder -> {child name: manifest digest}
    kept: dict = field(default_factory=dict)  # saving: staged folder -> {name of a child kept: its manifest digest}
    stats: dict = field(default_factory=dict)  # folder -> os.stat of the manifest written or read
    listed: dict = field(default_factory=dict)  # saving: staged folder -> (its file names, its children's)
    versions: dict | None = None  # saving: the runtime versions every manifest records (once per save)
    created: str | None = None  # saving: when the save started, the time every manifest records
    preread: dict = field(default_factory=dict)  # loading: folder -> {buffer file: array read as verified}
    checked: dict = field(default_factory=dict)  # loading: folder -> {file: its os.stat when verified}
    node: tuple = (None, None)  # saving: (context, folder) of the step whose stripped saver runs now
    saved: list = field(default_factory=list)  # saving: (step, staged folder) of each step written
    overlay: bool = False  # saving: the changes are committed onto the dump through a journal
    writer: object = None  # saving: the writer thread's batch that creates the manifests, if any
    layout: dict = field(default_factory=dict)  # saving: folder relative to the staged one -> its file names
    reusing: bool = False  # saving: the staged tree is a spare's, its folders and manifests reused (spare.py)

    def live_folder(self, staged_folder) -> str:
        """Saving: where the step being written at ``staged_folder`` lives in the dump
        (strings: this runs for every step of a save)."""
        staged_folder, staged = os.fspath(staged_folder), os.fspath(self.staged)
        return os.fspath(self.destination) + staged_folder[len(staged):]

    def manifest_files(self, folder) -> dict:
        """Loading: the ``files`` of the manifest read from ``folder``."""
        return self.manifests[os.fspath(folder)]["files"]


_OPTIONS: contextvars.ContextVar[_Options] = contextvars.ContextVar("stepline_save_options")


def current_options() -> _Options:
    """The options of the save or load in progress (for savers that need them)."""
    return _OPTIONS.get()


def report_records(context: ExecutionContext, records: dict, folder: str | None = None) -> None:
    """Let a saver add fields to the manifest records of files it wrote (e.g. by-value code);
    ``folder``: ``os.fspath(context.get_path())``, when the saver has it."""
    folder = folder if folder is not None else _folder_of(context)
    current_options().reported.setdefault(folder, {}).update(records)


# ------------------------------------------------------------------ saving
def save_step(step, context: ExecutionContext | None = None, full_dump: bool = False, mark_saved: bool = True):
    """Save ``step`` under ``context``; see DESIGN §5. Returns the live step, unchanged.

    A changes-only save (``full_dump=False``) skips what is already at that destination
    (:mod:`stepline.saving.destinations`). ``mark_saved=False`` records nothing (for
    throwaway dumps, such as the ones streaming workers load).
    """
    context = ExecutionContext.of(context)
    steps = check_tree_names(step, context.get_path() / str(step.name))
    final = context.push(step).get_path()
    if not full_dump and (unchanged_at(step, final) is not None or
                          (never_saved_nor_changed(step) and not os.path.lexists(final))):
        return step
    options = _save_atomically(step, context, full_dump, steps)
    if mark_saved:
        _record(step, options)
    return step


def _record(step, options: _Options) -> None:
    """Note in each step written where it now is and what its manifest there is, for the
    next changes-only save (:mod:`stepline.saving.destinations`)."""
    live, written = options.live_folder, options.written
    if options.full_dump:  # every step was written: the save has each one's folder, digest and stat
        stats = options.stats
        record_written((node, live(folder), written[folder], stats[folder]) for node, folder in options.saved)
        return
    if options.overlay:  # the steps it kept keep their records; a commit moved the manifests: stat'ed there
        record_written((node, live(folder), written[folder], _manifest_stat(live(folder)))
                       for node, folder in options.saved)
        return
    digests = {live(folder): digest for folder, digest in written.items()}
    stats = {live(folder): st for folder, st in options.stats.items()}
    record_saved(step, options.destination, digests, stats)


def _manifest_stat(folder: str) -> os.stat_result | None:
    try:
        return os.stat(os.path.join(folder, mf.MANIFEST_NAME), follow_symlinks=False)
    except OSError:
        return None  # (then the next changes-only save reads it to compare digests)


def _save_atomically(step, context: ExecutionContext, full_dump: bool, steps: int) -> _Options:
    """Save into a temporary sibling folder that then replaces the step's folder at once.

    A changes-only save over a dump writes there only the steps that changed (an overlay,
    committed through a journal), so its cost follows the change, and the previous dump
    stays whole until the commit. Returns the save's options: what it wrote where (staged
    folders; :meth:`_Options.live_folder` gives each one's place in the dump). A save that
    writes all of a tree of ``steps`` steps, many of them, hands its manifests to the
    writer thread (:mod:`stepline.saving.writer`).
    """
    final = context.push(step).get_path()
    overlay = not full_dump and is_overlay_for(final)
    options = _Options(full_dump=full_dump, destination=Path(os.path.abspath(final)),  # (live folders: absolute)
                       overlay=overlay)
    token = _OPTIONS.set(options)
    try:
        with atomic_folder(final, overlay=overlay, only_over_dumps=True, listed=options.listed,
                           layout=options.layout, reuse=True) as staged:
            options.staged, options.staged_path = staged, os.fspath(staged)
            options.reusing = not overlay and spare.is_spare(staged)
            staging_context = ExecutionContext(staged.parent, context.execution_phase, context.stripped_saver)  # (one saver for all)
            handing_over = (not overlay and not options.reusing  # (overwriting a manifest never waits long)
                            and writer.MIN_STEPS is not None and steps >= writer.MIN_STEPS)
            options.writer = writer.Batch() if handing_over else None
            try:
                _save_node(step, staging_context, os.fspath(staged.parent))
                if options.writer is not None:
                    options.stats.update(options.writer.finish())
                _before_swap(staged, options.written[os.fspath(staged)])
            except SaveError as e:  # name the destination, not the temporary folder
                raise type(e)(str(e).replace(str(staged), str(final))).with_traceback(e.__traceback__) from e.__cause__
            finally:
                if options.writer is not None:
                    options.writer.close()  # (before a failed save's staged folder is removed)
    finally:
        _OPTIONS.reset(token)
    return options


def _before_swap(staged: Path, root_digest: str) -> None:
    """The last step of a save, on the complete staged dump, right before it is swapped in.

    ``root_digest`` (of the staged root manifest, as written) is the Merkle root of what is
    about to become the dump;
    the one file that may still be added is ``staged / mf.SIGNATURE_NAME`` (not listed):
    the signature over that root (DESIGN §5a), so the dump and its signature appear together.
    """
    try:
        sign_dump(staged, root_digest, staged=True)
    except OSError as e:  # (a saver wrote a file of that name, the disk is full, …)
        raise SaveError(f"{staged / mf.SIGNATURE_NAME}: cannot write the dump's signature "
                        f"({e.strerror or e})") from e
    options = current_options()
    options.layout[""] += (mf.SIGNATURE_NAME,)


def save_children(children, context: ExecutionContext) -> None:
    """Save the children of the step whose folder is ``context.get_path()``, in order.

    In the calling thread: for small steps a hand-off to another thread costs more than
    the step's whole save (GIL hand-overs on every system call); a big buffer is already
    written while a second thread hashes it (:func:`~stepline.saving.objectfile.write_hashed`).
    """
    parent = _folder_of(context)
    options = current_options()
    kept = {} if options.full_dump else unchanged_children(children, options.live_folder(parent))
    if kept:
        options.kept.setdefault(parent, {}).update(kept)
    for child in children:
        if child.name not in kept:
            _save_node(child, context, parent)


def save_child(child, context: ExecutionContext) -> None:
    """Save a child of the step whose folder is ``context.get_path()`` (for custom savers)."""
    save_children([child], context)


def _folder_of(context: ExecutionContext) -> str:
    """``os.fspath(context.get_path())``: the string the save has for it when it is the folder
    of the step being saved (a ``Path`` costs more to build than a tiny step's manifest)."""
    options = _OPTIONS.get(None)
    if options is not None and options.node[0] is context:
        return options.node[1]
    return os.fspath(context.get_path())


def stripped_saver_folder(context: ExecutionContext) -> str:
    """The folder the stripped saver given ``context`` writes into, as a string."""
    return _folder_of(context)


def _save_node(step, parent_context: ExecutionContext, parent_folder: str) -> None:
    """Save ``step`` into ``parent_folder/<its name>`` through its savers, then its manifest."""
    options = _OPTIONS.get()
    context = parent_context.push(step)
    path = os.path.join(parent_folder, step.name)
    children = [c.name for c in step.get_children()]
    try:
        if not options.reusing:
            if path != options.staged_path:  # (atomic_folder made the staged root)
                os.mkdir(path)
        elif path == options.staged_path:
            spare.clear_folder(path, children)
        else:
            spare.reuse_folder(path, children)
    except OSError as e:
        raise SaveError(f"{path}: cannot create the folder of step {step.name!r} ({e.strerror or e})") from e
    stripped = copy.copy(step)
    savers = [context.stripped_saver, *step.savers]
    for saver in reversed(savers[1:]):
        options.node = (context, path)  # (a children saver saves other steps meanwhile)
        stripped = saver.save_step(stripped, context)
    options.node = (context, path)
    savers[0].save_step(stripped, context)
    reported = options.reported.pop(path, None) or {}
    inline = {n: encode_record(r["inline"], r) for n, r in reported.items() if "inline" in r}
    for name in inline:
        del reported[name]
    if reported or not _report_all_they_write(savers):
        files = _file_records(path, children, reported, savers)
    else:
        files = {}
    data = _node_manifest(step, savers, children, files, path)
    if inline:
        data[INLINE_FIELD] = inline
    raw, options.written[path] = mf.new_manifest_bytes(data)
    if not options.full_dump:  # (what a commit onto the dump needs, without reading it back)
        options.listed[path] = (set(files), set(children))
        journal.remember(options.written[path], files, children)
    if options.writer is not None:
        options.writer.write(path, raw)
    else:
        try:
            write = spare.overwrite_manifest if options.reusing else mf.create_manifest
            options.stats[path] = write(path, raw)
        except OSError as e:
            raise writer.creation_error(path, e) from e
    options.saved.append((step, path))
    options.layout[path[len(options.staged_path) + 1:]] = (mf.MANIFEST_NAME, *files)


def _file_records(path: str, children: list, reported: dict, savers) -> dict:
    """The manifest records of the files in the step folder ``path`` (its savers' files)."""
    names = sorted(reported) if _report_all_they_write(savers) else _own_files(path, children, reported)
    files = cached_records(Path(path), names, known=reported)
    for name, record in reported.items():
        if name in files:
            files[name].update((k, v) for k, v in record.items() if k not in ("size", "blake3", "sha256"))
    return files


_NOT_OWN = (mf.MANIFEST_NAME, mf.SIGNATURE_NAME)


def _report_all_they_write(savers) -> bool:
    """Whether the step's folder holds exactly the files its savers reported: true of
    stepline's own (the stripped saver reports each file it writes, the children saver
    writes only child folders), so the folder need not be listed. Other savers may write
    files without reporting them."""
    return all(type(saver) in _REPORTING_SAVERS for saver in savers)


_REPORTING_SAVERS = (JoblibStepSaver, ChildrenSaver)


def _own_files(folder: str, children: list, written: dict) -> list[str]:
    """The files of a step folder that its savers wrote (not its children's, not hidden):
    those they reported (``written``, regular files they made) and any other regular file."""
    skip = set(children)
    names = []
    for name in os.listdir(folder):
        if name in skip or name.startswith(".") or name in _NOT_OWN:
            continue
        if name in written or stat.S_ISREG(os.lstat(os.path.join(folder, name)).st_mode):
            names.append(name)
    return sorted(names)


def _node_manifest(step, savers, children, files, folder: str) -> dict:
    options = current_options()
    if options.versions is None:  # what every manifest of this save records, collected once
        options.versions, options.created = mf.runtime_versions(), mf.created_now()
    space = step.hyperparams_space
    return {
        "format": mf.FORMAT, "format_version": mf.FORMAT_VERSION, "created": options.created,
        "name": step.name,
        "class": _qualified(type(step)),
        "savers": [_qualified(type(s)) for s in savers[1:]],
        "stripped_saver": _qualified(type(savers[0])),
        "hyperparams": _json_safe_dict(step._get_own_hyperparams()),
        "hyperparams_space": _json_safe({k: _space_json(v) for k, v in space.items()}) if space else {},
        "children": _child_entries(folder, children),
        "files": files,
        "info": _manifest_info(step),
        "versions": options.versions,
    }


def _json_safe_dict(values) -> dict:
    """``_json_safe(dict(values))``, without the walk when every value is a plain scalar."""
    if set(map(type, values.values())) <= _PLAIN and set(map(type, values)) <= _STR:
        return dict(values)
    return _json_safe(dict(values))


_PLAIN = {str, int, float, bool, type(None)}
_STR = {str}


def _manifest_info(step) -> dict:
    """What the step tells readers of its manifest (``manifest_info()``, e.g. the estimator an
    ``SKLearnWrapper`` holds), so that ``stepline inspect`` shows it without unpickling."""
    if not hasattr(type(step), "manifest_info") and "manifest_info" not in step.__dict__:
        return {}  # (asked of the class first: a step's __getattr__ of a missing name costs µs)
    describe = step.manifest_info
    return _json_safe(dict(describe())) if callable(describe) else {}


def _child_entries(folder: str, children: list) -> list[dict]:
    """The manifest's ``children``: each child's name and manifest digest (the one this save
    wrote, or the kept one's)."""
    options = current_options()
    kept, written = options.kept.get(folder, {}), options.written
    entries = []
    for child in children:
        digest = kept.get(child) or written.get(os.path.join(folder, child))
        if digest is None:
            digest = mf.root_digest(options.live_folder(os.path.join(folder, child)))
        entries.append({"name": child, "manifest": digest})
    return entries


def _json_safe(value):
    """``value`` as JSON types; anything else (an estimator object, …) becomes its repr."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    item = getattr(value, "item", None)
    if item is not None and getattr(value, "ndim", None) == 0:
        return _json_safe(item())
    return repr(value)


def _qualified(cls) -> str:
    name = _QUALIFIED.get(cls)
    if name is None:
        name = f"{cls.__module__}.{cls.__qualname__}"
        if len(_QUALIFIED) < 4096:
            _QUALIFIED[cls] = name
    return name


_QUALIFIED: dict = {}  # class -> its qualified name (a save asks for each step's classes)


def _space_json(dist):
    """The distribution as JSON for the manifest, or its repr when JSON cannot carry it."""
    try:
        return dist.to_json_dict()
    except (AttributeError, TypeError, ValueError):
        return repr(dist)


# ------------------------------------------------------------------ loading
def load_step(context: ExecutionContext, path, mmap_mode: str | None = None, verify=True, trusted=None):
    """Load the step saved at ``context.root/path``; it comes back not set up.

    Whether the dump is trusted is decided first (its signature, the trust store, or
    ``trusted=True``, see :mod:`stepline.trust`); an untrusted dump loads only when all its
    pickles need is on the allow-list, else :class:`~stepline.trust.UntrustedDumpError`.
    """
    parts = _step_path(context, path)
    with reading_lock(context.root / parts[0]):
        top = resolve_dump_folder(context.root / parts[0])
        spare.release_data(top, for_a_save=False)  # (its pages freed as the arrays loaded need some)
        options = _Options(mmap_mode=mmap_mode, verify=verify, trust_override=trusted is True)
        folder, manifest, top_manifest = _manifest_along(os.fspath(top), parts[1:], options)
        merkle_root = options.written[os.fspath(top)] if top_manifest["format_version"] >= 2 else None
        verdict = gate.decide(top, trusted, merkle_root)  # before anything is unpickled (DESIGN §5a)
        token = _OPTIONS.set(options)
        try:
            if not verdict.trusted:  # (each file read as it is hashed, audited, and then loaded: once)
                _check_untrusted(folder, verdict, options)
            _warn_versions(folder, manifest)
            parents = tuple(ChildPlaceholder(name) for name in parts[:-1])
            base = ExecutionContext(context.root, context.execution_phase, context.stripped_saver, parents)
            step = _load_node(parts[-1], base, manifest, folder, options)
        finally:
            _OPTIONS.reset(token)
    record_saved(step, folder, options.written, options.stats)  # saving it back here writes nothing
    return step


def _check_untrusted(folder: str, verdict, options: _Options) -> None:
    """The trust gate's audit of an untrusted dump (:func:`stepline.trust.gate.check_untrusted`);
    what it verified and read is noted in ``options`` (folders as strings) for the load to use."""
    verified, preread = set(), {}
    gate.check_untrusted(folder, verdict, options.verify, verified, _buffer_for, preread)
    options.verified.update(os.fspath(f) for f in verified)
    options.preread.update((os.fspath(f), read) for f, read in preread.items())
    options.trusted = False


def _step_path(context: ExecutionContext, path) -> tuple:
    """The names of ``path`` (``"name"`` or ``"name/child"``), each one folder inside the root."""
    parts = Path(path).parts
    if not parts:
        raise NotADumpError(f"{context.root}: give the name of the saved step to load")
    if Path(path).is_absolute() or not all(mf.is_safe_component(part) for part in parts):
        raise NotADumpError(f"{path}: not the path of a step inside {context.root} (give names such as "
                            f"'pipeline' or 'pipeline/child'; no absolute paths, '..' or hidden names)")
    return parts


def _manifest_along(top: str, below: tuple, options: _Options) -> tuple[str, dict, dict]:
    """The folder and manifest of ``top/below…``, each checked against its parent's digest,
    and the manifest of ``top``."""
    folder, manifest = top, _read_step_manifest(top, None, options)
    top_manifest = manifest
    for name in below:
        listed = dict(mf.child_entries(manifest, folder))
        if name not in listed:
            raise NotADumpError(f"{os.path.join(folder, name)}: {folder} has no child step {name!r} "
                                f"(it has: {', '.join(listed) or 'none'})")
        folder = os.path.join(folder, name)
        manifest = _read_step_manifest(folder, listed[name], options)
    return folder, manifest, top_manifest


def _read_step_manifest(folder: str, digest: str | None, options: _Options) -> dict:
    """The manifest of a step folder, checked against ``digest`` (from the parent's
    manifest) when given; its digest and ``os.stat`` (as read) are noted in ``options``."""
    manifest, actual, st = mf.read_checked_manifest(folder, digest)
    options.written[folder], options.stats[folder] = actual, st
    return manifest


def load_child(name: str, context: ExecutionContext):
    """Load the child ``name`` of the step whose folder is ``context.get_path()``."""
    return load_children([name], context)[0]


def load_children(names, context: ExecutionContext) -> list:
    """Load the children ``names`` of the step whose folder is ``context.get_path()``, in
    order, each checked against the digest its parent's manifest lists (the parent's folder
    and listing looked up once, not once per child)."""
    options = current_options()
    parent_folder = context.get_folder()
    parent = options.manifests.get(parent_folder)
    listed = options.children.get(parent_folder)
    if listed is None and parent is not None:
        listed = options.children[parent_folder] = mf.listed_children(parent)
    listed = listed or {}
    children = []
    for name in names:
        if parent is not None and name not in listed:
            raise StepLoadError(f"{os.path.join(parent_folder, name)}: the manifest of {parent_folder} "
                                f"lists no child {name!r}")
        if parent is None and not mf.is_safe_component(name):  # (listed names were checked with their manifest)
            raise StepLoadError(f"{parent_folder}: {name!r} is not the name of a child folder inside the dump")
        folder = parent_folder + os.sep + name  # (a folder of a step: never ends with a separator)
        children.append((name, folder, _read_step_manifest(folder, listed.get(name), options)))
    if len(children) > 1:  # big files of several children: verified side by side, before any is loaded
        verify_side_by_side([(folder, manifest["files"]) for _, folder, manifest in children], options.verify,
                            _buffer_for, options.verified, options.preread)
    return [_load_node(name, context, manifest, folder, options) for name, folder, manifest in children]


def _load_node(name: str, parent_context: ExecutionContext, manifest: dict, folder: str, options: _Options):
    """Load the step ``name`` whose checked ``manifest`` was read from ``folder`` (a string)."""
    placeholder = ChildPlaceholder(name)
    context = parent_context.push(placeholder)
    files = manifest["files"]
    if files:
        if folder not in options.verified:  # each file hashed as it is read, for the saver to use
            options.preread[folder] = verify_files(folder, files, options.verify, _buffer_for)
        options.checked[folder] = {n: v for n, v in options.preread.get(folder, _NOTHING).items()
                                   if isinstance(v, os.stat_result)}  # for the custom savers (open_verified)
    options.manifests[folder] = manifest
    try:
        step = context.stripped_saver.load_step(placeholder, context)
        _check_name(step, name, folder)  # (before its savers read anything: they find its folder by its name)
        if step.savers:
            context = parent_context.push(step)
            for saver in step.savers:
                if saver.can_load(step, context):
                    step = saver.load_step(step, context)
            _check_name(step, name, folder)
    finally:  # what only this step's savers use, freed at once (not kept for the cyclic GC to walk)
        options.manifests.pop(folder, None)
        options.children.pop(folder, None)
        options.checked.pop(folder, None)
    return step


_NOTHING: dict = {}


def _check_name(step, name: str, folder: str) -> None:
    if step.name != name:
        raise StepLoadError(f"{folder}: holds step {step.name!r}, expected {name!r}")


@contextlib.contextmanager
def open_verified(context: ExecutionContext, name: str):
    """For a custom saver's ``load_step``: the file ``name`` of the step's folder, open for
    reading, and the very file the load verified (same inode, size and times: a file replaced
    or written to since is a :class:`CorruptFileError`, also when written to while read).

    A file its manifest does not list is opened as it is (nothing vouches for it)."""
    folder = context.get_folder()
    path = os.path.join(folder, name)
    checked = current_options().checked.get(folder, _NOTHING).get(name)
    try:
        f = open_checked(path, checked, os.O_RDONLY, CorruptFileError, "file its manifest lists") \
            if checked is not None else open_regular(path, os.O_RDONLY, CorruptFileError, "file")
    except FileNotFoundError as e:
        raise MissingFileError(f"{path}: missing") from e
    with f:
        yield f
        if checked is not None:
            check_unchanged(f, checked, path, CorruptFileError)


def _buffer_for(name: str, size: int):
    """Where the stripped saver will want a file read as it is verified: the pickle's bytes
    (hashed as read, then unpickled: each file of a step read once), or a buffer file's
    array (when the buffers are to be mapped: hashed through a map, ``BY_MAP``)."""
    from stepline.saving.objectfile import STREAM_NAME, buffer_for, map_for
    if name == STREAM_NAME:
        return bytearray(size)
    return map_for(name, size) if current_options().mmap_mode else buffer_for(name, size)


def _warn_versions(folder: Path, manifest: dict) -> None:
    differences = mf.version_differences(manifest.get("versions", {}))
    if differences:
        warnings.warn(f"{folder} was saved with other package versions: " + "; ".join(differences),
                      VersionMismatchWarning, stacklevel=4)
