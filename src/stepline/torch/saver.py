"""``TorchModuleSaver``: a PyTorch step's weights as safetensors + JSON, never a pickled module.

Saving writes, next to the stripped step's ``step.pkl``::

    model.safetensors      the model's state_dict tensors (keys are the state_dict's)
    model.json             the rest of the state_dict (non-tensor extra state), its order
                           and the list of tensor files
    optimizer.safetensors  the optimizer's state tensors (``state.<param index>.<name>``)
    optimizer.json         param_groups and other non-tensor state

A state over 64 MiB is written as shards, ``model-00001-of-00002.safetensors``…, one per
core (at most 8), so that hashing them runs in parallel.

then strips the model, optimizer and loss from the copy being saved (by assignment),
so the stripped saver pickles only the recipe and the hyperparameters. The files are
hashed while they are written and recorded in the storage layer's stat cache, so the
manifest does not read them again.

Loading reads the files with pickle-free readers (``safetensors`` and ``json``) onto
the CPU and leaves them on the step; ``setup`` rebuilds the model through its factory
and puts the weights in, on whatever device is configured there: a dump saved from a
GPU loads on a CPU-only machine.
"""
from __future__ import annotations

import json
import os
import re
from collections import OrderedDict
from pathlib import Path

from stepline.saving.errors import CorruptFileError, ManifestError, MissingFileError, StepLoadError
from stepline.saving.integrity import stat_entry, update_stat_cache
from stepline.saving.procedure import open_verified
from stepline.saving.savers import BaseSaver
from stepline.torch import tensorfile

PARTS = ("model", "optimizer")
_SHARD = re.compile(r"[A-Za-z0-9_]+(-\d{5}-of-\d{5})?\.safetensors")


class TorchModuleSaver(BaseSaver):
    """Saves a :class:`~stepline.torch.TorchStep`'s model and optimizer state (see module doc).

    Works with any step that provides ``torch_state()``, ``strip_torch_state()`` and
    ``restore_torch_state(model_state, optimizer_state)``.
    """

    def save_step(self, step, context):
        folder = Path(context.get_path())
        folder.mkdir(parents=True, exist_ok=True)
        model_state, optimizer_state = step.torch_state()
        entries = {}
        for part, state in zip(PARTS, (model_state, optimizer_state)):
            if state is None:
                _remove_part(folder, part)
                continue
            entries.update(_write_part(folder, part, state))
        if entries:
            update_stat_cache(folder, entries, settle=True)
        return step.strip_torch_state()

    def can_load(self, step, context) -> bool:
        folder = Path(context.get_path())
        return any((folder / f"{part}.json").is_file() for part in PARTS)

    def load_step(self, step, context):
        folder = Path(context.get_path())
        states = [_read_part(context, folder, part) for part in PARTS]
        return step.restore_torch_state(*states)


def _write_part(folder: Path, part: str, state) -> dict:
    """Write ``<part>.json`` and its safetensors file(s); return their stat-cache entries."""
    tree, tensors = tensorfile.split_tensors(state)
    written = tensorfile.write_safetensors_shards(folder, part, tensors, metadata={"format": "pt"})
    names = [name for name, _, _ in written]
    entries = {name: stat_entry(os.stat(folder / name), digest) for name, digest, _ in written}
    header = {"format": tensorfile.FORMAT, "format_version": tensorfile.FORMAT_VERSION, "part": part,
              "tensors": names, "state": tree}
    metadata = getattr(state, "_metadata", None)  # a state_dict's module versions
    if metadata is not None:
        header["state_metadata"] = tensorfile.split_tensors(dict(metadata))[0]
    json_name = f"{part}.json"
    digest, _ = tensorfile.write_json(folder / json_name, header)
    entries[json_name] = stat_entry(os.stat(folder / json_name), digest)
    _remove_part(folder, part, keep=set(names) | {json_name})
    return entries


def _reopenable(f, path: Path) -> str:
    """A path that opens the very file ``f`` has open (Linux: ``/proc/self/fd``), else ``path``."""
    by_descriptor = f"/proc/self/fd/{f.fileno()}"
    return by_descriptor if os.path.exists(by_descriptor) else os.fspath(path)


def _part_files(folder: Path, part: str) -> list[Path]:
    return [p for p in folder.iterdir() if p.is_file() and (
        p.name in (f"{part}.json", f"{part}.safetensors") or _SHARD.fullmatch(p.name) and p.name.startswith(part + "-"))]


def _remove_part(folder: Path, part: str, keep=frozenset()) -> None:
    """Delete the files of ``part`` a previous save left that this one did not write."""
    for path in _part_files(folder, part):
        if path.name not in keep:
            path.unlink(missing_ok=True)


def _read_part(context, folder: Path, part: str):
    """The state of ``part`` from its files, each the very file the load verified (``open_verified``)."""
    json_path = folder / f"{part}.json"
    if not json_path.is_file():
        return None
    try:
        with open_verified(context, json_path.name) as f:
            header = json.loads(f.read().decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise ManifestError(f"{json_path}: invalid JSON ({e})") from e
    if not isinstance(header, dict) or header.get("format") != tensorfile.FORMAT:
        raise ManifestError(f"{json_path}: not a stepline torch state file")
    if header.get("format_version", 0) > tensorfile.FORMAT_VERSION:
        raise ManifestError(f"{json_path}: format version {header.get('format_version')} is newer than "
                            f"this stepline reads ({tensorfile.FORMAT_VERSION}); upgrade stepline")
    names = header.get("tensors")
    if isinstance(names, str):
        names = [names]
    if not (isinstance(names, list) and all(isinstance(n, str) and _SHARD.fullmatch(n) for n in names)):
        raise ManifestError(f"{json_path}: invalid list of tensor files {header.get('tensors')!r}")
    tensors = {}
    for name in names:
        tensors_path = folder / name
        try:
            with open_verified(context, name) as f:  # read through this descriptor: the file verified
                tensors.update(tensorfile.read_safetensors(_reopenable(f, tensors_path)))
        except MissingFileError as e:
            raise CorruptFileError(f"{tensors_path}: missing: {json_path.name} refers to it") from e
        except StepLoadError:
            raise
        except Exception as e:  # safetensors raises its own error types for bad headers / sizes
            raise CorruptFileError(f"{tensors_path}: cannot read the tensors ({type(e).__name__}: {e})") from e
    try:
        state = tensorfile.join_tensors(header["state"], tensors)
    except KeyError as e:
        raise CorruptFileError(f"{json_path}: refers to tensor {e} that {', '.join(names)} do not hold") from e
    if "state_metadata" in header and isinstance(state, dict):
        state = OrderedDict(state)
        state._metadata = tensorfile.join_tensors(header["state_metadata"], {})
    return state
