"""State dicts on disk: tensors in a ``.safetensors`` file, everything else in JSON.

No pickle is involved in either direction, so reading a dump never runs code from it
(the guarantee ``torch.load(weights_only=True)`` gives, by construction).

- :func:`split_tensors` / :func:`join_tensors` turn a nested state (a model's
  ``state_dict``, an optimizer's ``state_dict`` with its integer keys, tuples, step
  counts, ``None``\\ s) into a JSON tree whose leaves ``{"$tensor": key}`` point into a
  flat ``{key: tensor}`` dict, and back. Tensors that are the same view of the same
  memory (tied weights) are stored once.
- :func:`write_safetensors_shards` writes that flat dict in the safetensors format
  straight from the tensors' memory (no intermediate ``bytes``) while threads hash the
  same memory, so the BLAKE3 digest the manifest needs costs no second pass over the file;
  big states are split into shards so that their hashes run on several cores.
- :func:`read_safetensors` reads with the official ``safetensors`` reader (memory-mapped,
  copy-on-write: nothing is read until used).
"""
from __future__ import annotations

import json
import os
import secrets
import struct
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from stepline.saving.integrity import digest_bytes, new_hasher
from stepline.saving.preallocation import preallocate_big
from stepline.saving.reclaim import make_room
from stepline.saving.safe_open import replace_with

FORMAT = "stepline-torch-state"
FORMAT_VERSION = 1

#: torch dtype -> safetensors dtype name (the format's own spelling).
_DTYPES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
    torch.uint8: "U8", torch.bool: "BOOL", torch.complex64: "C64",
}
for _name, _code in (("float8_e4m3fn", "F8_E4M3"), ("float8_e5m2", "F8_E5M2"),
                     ("uint16", "U16"), ("uint32", "U32"), ("uint64", "U64")):
    if hasattr(torch, _name):
        _DTYPES[getattr(torch, _name)] = _code

_CHUNK = 64 << 20  # bytes per write() call and per hash update


class TensorStateError(TypeError):
    """A state holds a value that is neither a tensor nor plain JSON data."""


# ------------------------------------------------------------------ tree <-> (JSON, tensors)
def split_tensors(state, prefix: str = "") -> tuple[object, dict]:
    """Split ``state`` into a JSON-safe tree and a flat ``{key: tensor}`` dict.

    Keys are the dotted paths of the tensors (a model ``state_dict``'s keys stay as
    they are). The tree keeps dict order, integer keys and tuples.
    """
    tensors: dict = {}
    seen: dict = {}

    def key_for(path: str) -> str:
        key, i = path, 1
        while key in tensors:
            key, i = f"{path}#{i}", i + 1
        return key

    def enc(value, path: str):
        if isinstance(value, torch.Tensor):
            identity = _identity(value)
            if identity is not None and identity in seen:
                return {"$tensor": seen[identity]}
            key = key_for(path or "tensor")
            tensors[key] = value
            if identity is not None:
                seen[identity] = key
            return {"$tensor": key}
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        if isinstance(value, dict):
            join = (path + ".") if path else ""
            if all(isinstance(k, str) and not k.startswith("$") for k in value):
                return {k: enc(v, join + k) for k, v in value.items()}
            items = []
            for k, v in value.items():
                if not (k is None or isinstance(k, (bool, int, float, str))):
                    raise TensorStateError(f"{path or 'state'}: dict key {k!r} of type "
                                           f"{type(k).__name__} cannot be saved as JSON")
                items.append([k, enc(v, join + str(k))])
            return {"$dict": items}
        if isinstance(value, tuple):
            return {"$tuple": [enc(v, f"{path}.{i}") for i, v in enumerate(value)]}
        if isinstance(value, list):
            return [enc(v, f"{path}.{i}") for i, v in enumerate(value)]
        item = getattr(value, "item", None)  # NumPy scalars
        if callable(item) and getattr(value, "shape", None) == ():
            return enc(item(), path)
        raise TensorStateError(
            f"{path or 'state'}: a {type(value).__name__} ({value!r:.80}) is neither a tensor nor "
            f"JSON data (None, bool, int, float, str, list, tuple, dict); stepline saves torch "
            f"state without pickle, so it cannot store it")

    return enc(state, prefix), tensors


def join_tensors(tree, tensors: dict):
    """The inverse of :func:`split_tensors`."""
    def dec(node):
        if isinstance(node, list):
            return [dec(v) for v in node]
        if isinstance(node, dict):
            if len(node) == 1:
                (tag, inner), = node.items()
                if tag == "$tensor":
                    return tensors[inner]
                if tag == "$tuple":
                    return tuple(dec(v) for v in inner)
                if tag == "$dict":
                    return {k: dec(v) for k, v in inner}
            return {k: dec(v) for k, v in node.items()}
        return node
    return dec(tree)


def _identity(t: torch.Tensor):
    """What makes two tensors the very same view of the same memory (None: no identity)."""
    if t.device.type == "meta" or t.numel() == 0:
        return None
    try:
        ptr = t.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError):
        return None
    return (t.device, ptr, t.storage_offset(), tuple(t.shape), tuple(t.stride()), t.dtype)


# ------------------------------------------------------------------ safetensors writing
def _contiguous_cpu(t: torch.Tensor) -> torch.Tensor:
    t = t.detach()
    if t.device.type != "cpu":
        t = t.to("cpu")
    if t.is_sparse or t.layout != torch.strided:
        raise TensorStateError(f"only dense tensors can be saved, got layout {t.layout}")
    return t.contiguous()


def _byte_view(t: torch.Tensor) -> memoryview:
    """The bytes of a contiguous CPU tensor, without copying."""
    if t.numel() == 0:
        return memoryview(b"")
    flat = t.reshape(-1)
    if flat.dtype != torch.uint8:
        flat = flat.view(torch.uint8)
    return memoryview(flat.numpy()).cast("B")


def safetensors_layout(tensors: dict, metadata: dict | None = None):
    """The header bytes and ``[(key, tensor)]`` in file order for ``tensors``.

    Tensors are ordered by element size, largest first, so every tensor starts at a
    multiple of its element size (as safetensors' own writer does); the header is padded
    with spaces to 8 bytes.
    """
    if sys.byteorder != "little":
        raise NotImplementedError("writing safetensors on a big-endian machine is not supported")
    prepared = []
    for key, t in tensors.items():
        if t.dtype not in _DTYPES:
            raise TensorStateError(f"tensor {key!r}: dtype {t.dtype} cannot be stored in safetensors")
        prepared.append((key, _contiguous_cpu(t)))
    prepared.sort(key=lambda kt: (-kt[1].element_size(), kt[0]))
    header: dict = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    offset = 0
    for key, t in prepared:
        nbytes = t.numel() * t.element_size()
        header[key] = {"dtype": _DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    raw += b" " * (-(8 + len(raw)) % 8)
    return struct.pack("<Q", len(raw)) + raw, prepared


def write_safetensors(path, tensors: dict, metadata: dict | None = None) -> tuple[str, int]:
    """Write ``tensors`` to one safetensors file ``path``; return ``(blake3, size)``.

    See :func:`write_safetensors_shards`, which this is the one-file case of.
    """
    path = Path(path)
    layout = safetensors_layout(tensors, metadata)
    with ThreadPoolExecutor(1) as pool:
        return _write_layouts(pool, [path], [layout])[0]


def write_safetensors_shards(folder, stem: str, tensors: dict, metadata: dict | None = None,
                             max_shards: int | None = None) -> list[tuple[str, str, int]]:
    """Write ``tensors`` as ``<stem>.safetensors``, or as shards when they are big.

    Returns ``[(file name, blake3, size)]``. Each file is hashed on one thread, so a
    big state is split into ``<stem>-00001-of-0000N.safetensors`` shards of whole
    tensors (one per core, at most 8, none under 64 MiB) whose hashes run in parallel
    threads, from the tensors' memory, while the main thread writes the files one after
    another: the hash the manifest needs costs no pass over the file and, with enough
    cores, no time. Each file is written to a hidden temporary sibling and renamed into
    place, so a model still mapping the previous file keeps its data.
    """
    folder = Path(folder)
    total = sum(_nbytes(t) for t in tensors.values())
    n = max(1, min(max_shards or 8, -(-total // SHARD_MIN_BYTES), os.cpu_count() or 1, len(tensors) or 1))
    groups = _balanced(tensors, n)
    names = ([f"{stem}.safetensors"] if len(groups) == 1 else
             [f"{stem}-{i:05d}-of-{len(groups):05d}.safetensors" for i in range(1, len(groups) + 1)])
    layouts = [safetensors_layout(g, metadata) for g in groups]
    with ThreadPoolExecutor(len(groups)) as pool:
        results = _write_layouts(pool, [folder / name for name in names], layouts)
    return [(name, digest, size) for name, (digest, size) in zip(names, results)]


SHARD_MIN_BYTES = 64 << 20


def _nbytes(t) -> int:
    return t.numel() * t.element_size()


def _balanced(tensors: dict, n: int) -> list[dict]:
    """Split ``tensors`` into ``n`` groups of about equal bytes (largest first, to the lightest)."""
    if n == 1:
        return [tensors]
    loads, groups = [0] * n, [{} for _ in range(n)]
    for key, t in sorted(tensors.items(), key=lambda kt: -_nbytes(kt[1])):
        i = loads.index(min(loads))
        groups[i][key] = t
        loads[i] += _nbytes(t)
    return [g for g in groups if g]


def _write_layouts(pool, paths: list, layouts: list) -> list[tuple[str, int]]:
    """Hash every layout in ``pool`` while this thread writes them; return ``[(blake3, size)]``."""
    hashes = [pool.submit(_digest_views, list(_chunks(head, prepared))) for head, prepared in layouts]
    sizes, temps = [], []
    try:
        for path, (head, prepared) in zip(paths, layouts):
            tmp = path.with_name(f".{path.name}.tmp-{secrets.token_hex(4)}")
            temps.append(tmp)
            size = 0
            total = len(head) + sum(_nbytes(t) for _, t in prepared)
            make_room(total)  # (the replaced dump's data freed just before: this write takes its pages)
            with open(tmp, "wb", buffering=0) as f:
                preallocate_big(f.fileno(), total)
                for view in _chunks(head, prepared):
                    _write_all(f, view)
                    size += view.nbytes
            sizes.append(size)
        digests = [h.result() for h in hashes]
        for tmp, path in zip(temps, paths):
            os.replace(tmp, path)
    except BaseException:
        for h in hashes:
            h.cancel()
        for tmp in temps:
            tmp.unlink(missing_ok=True)
        raise
    return list(zip(digests, sizes))


def _digest_views(views) -> str:
    digest = new_hasher()
    for view in views:
        digest.update(view)  # releases the GIL
    return digest.hexdigest()


def _chunks(head: bytes, prepared: list):
    yield memoryview(head)
    for _, t in prepared:
        view = _byte_view(t)
        for start in range(0, view.nbytes, _CHUNK):
            yield view[start:start + _CHUNK]


def _write_all(f, view: memoryview) -> None:
    while view.nbytes:
        n = f.write(view)
        view = view[n:]


# ------------------------------------------------------------------ reading
def read_safetensors(path, device: str = "cpu") -> dict:
    """``{key: tensor}`` from a safetensors file, with the official (pickle-free) reader."""
    from safetensors.torch import load_file
    return load_file(os.fspath(path), device=device)


def write_json(path, data) -> tuple[str, int]:
    """Write ``data`` as JSON (atomically); return ``(blake3, size)``."""
    path = Path(path)
    raw = (json.dumps(data, indent=1, ensure_ascii=False, allow_nan=True) + "\n").encode("utf-8")
    replace_with(path, raw)
    return digest_bytes(raw), len(raw)


def read_json(path):
    return json.loads(Path(path).read_bytes().decode("utf-8"))
