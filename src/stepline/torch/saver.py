"""``TorchModuleSaver``: a PyTorch step's weights as safetensors + JSON, never a pickled module.

Saving writes, next to the stripped step's ``step.pkl``::

    model.safetensors      the model's state_dict tensors (keys are the state_dict's)
    model.json             the rest of the state_dict (non-tensor extra state) and its order
    optimizer.safetensors  the optimizer's state tensors (``state.<param index>.<name>``)
    optimizer.json         param_groups, step counts and other non-tensor state

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

import os
from pathlib import Path

from stepline.saving.errors import CorruptFileError, ManifestError
from stepline.saving.integrity import stat_entry, update_stat_cache
from stepline.saving.savers import BaseSaver
from stepline.torch import tensorfile

PARTS = ("model", "optimizer")


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
        states = [_read_part(folder, part) for part in PARTS]
        return step.restore_torch_state(*states)


def _write_part(folder: Path, part: str, state) -> dict:
    """Write ``<part>.safetensors`` and ``<part>.json``; return their stat-cache entries."""
    tree, tensors = tensorfile.split_tensors(state)
    tensors_name, json_name = f"{part}.safetensors", f"{part}.json"
    digest, _ = tensorfile.write_safetensors(folder / tensors_name, tensors, metadata={"format": "pt"})
    entries = {tensors_name: stat_entry(os.stat(folder / tensors_name), digest)}
    header = {"format": tensorfile.FORMAT, "format_version": tensorfile.FORMAT_VERSION, "part": part,
              "tensors": tensors_name, "state": tree}
    digest, _ = tensorfile.write_json(folder / json_name, header)
    entries[json_name] = stat_entry(os.stat(folder / json_name), digest)
    return entries


def _remove_part(folder: Path, part: str) -> None:
    for suffix in (".safetensors", ".json"):
        (folder / f"{part}{suffix}").unlink(missing_ok=True)


def _read_part(folder: Path, part: str):
    json_path = folder / f"{part}.json"
    if not json_path.is_file():
        return None
    try:
        header = tensorfile.read_json(json_path)
    except (UnicodeDecodeError, ValueError) as e:
        raise ManifestError(f"{json_path}: invalid JSON ({e})") from e
    if not isinstance(header, dict) or header.get("format") != tensorfile.FORMAT:
        raise ManifestError(f"{json_path}: not a stepline torch state file")
    if header.get("format_version", 0) > tensorfile.FORMAT_VERSION:
        raise ManifestError(f"{json_path}: format version {header.get('format_version')} is newer than "
                            f"this stepline reads ({tensorfile.FORMAT_VERSION}); upgrade stepline")
    tensors_path = folder / header.get("tensors", f"{part}.safetensors")
    if tensors_path.parent != folder:
        raise ManifestError(f"{json_path}: invalid tensors file name {header.get('tensors')!r}")
    try:
        tensors = tensorfile.read_safetensors(tensors_path)
    except FileNotFoundError as e:
        raise CorruptFileError(f"{tensors_path}: missing: {json_path.name} refers to it") from e
    except Exception as e:  # safetensors raises its own error types for bad headers / sizes
        raise CorruptFileError(f"{tensors_path}: cannot read the tensors ({type(e).__name__}: {e})") from e
    try:
        return tensorfile.join_tensors(header["state"], tensors)
    except KeyError as e:
        raise CorruptFileError(f"{json_path}: refers to tensor {e} that {tensors_path.name} does not hold") from e
