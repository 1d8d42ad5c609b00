"""Open Inference Protocol v2 (KServe / Triton) REST bodies, and MLflow-style plain JSON.

Decodes ``/v2/models/{name}/infer`` requests, JSON tensors and the binary tensor data
extension (``Inference-Header-Content-Length``, what ``tritonclient.http`` sends by
default), into NumPy arrays; encodes responses the same two ways. Every problem with a
body raises :class:`RequestError` naming the field at fault (``inputs[0].shape``…), which
the app turns into a 4xx with the protocol's ``{"error": "..."}`` body.

Hand-written: the protocol is a JSON schema plus one framing rule, and tritonclient's own
codec lives in a client package that a server should not depend on.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np

from stepline.serving import json_codec

#: v2 datatype -> NumPy dtype (little-endian, as the binary extension specifies).
DATATYPES = {
    "BOOL": np.dtype(np.bool_), "UINT8": np.dtype("<u1"), "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"), "UINT64": np.dtype("<u8"), "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"), "INT32": np.dtype("<i4"), "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"), "FP32": np.dtype("<f4"), "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(object),
}
#: NumPy kinds a JSON array may hold for each family of datatypes.
_JSON_KINDS = {"BOOL": "b", "BYTES": "U", "FP": "iuf", "INT": "iu", "UINT": "iu"}
HEADER_LENGTH = "inference-header-content-length"


class RequestError(ValueError):
    """A request the server refuses: ``status`` (4xx) and a message naming the field."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass
class Tensor:
    """One named input or output tensor."""

    name: str
    array: np.ndarray
    datatype: str = ""

    def __post_init__(self):
        self.datatype = self.datatype or datatype_of(self.array)


@dataclass
class InferRequest:
    """A decoded ``infer`` request: inputs, the outputs asked for and how to send them."""

    inputs: list
    outputs: list = field(default_factory=list)  # [(name, binary: bool)]; empty = every output
    binary_output: bool = False
    id: str | None = None


# ------------------------------------------------------------------ JSON helpers
def load_json(body: bytes, where: str = "body"):
    """Parse JSON, refusing invalid UTF-8, invalid JSON and absurd nesting with a RequestError."""
    if not body:
        raise RequestError(f"{where}: empty; expected a JSON object")
    try:
        return json_codec.loads(body)
    except UnicodeDecodeError as e:
        raise RequestError(f"{where}: not UTF-8 ({e.reason} at byte {e.start})") from None
    except RecursionError:  # the C decoder checks its depth against the interpreter's recursion limit
        raise RequestError(f"{where}: JSON nested too deeply") from None
    except (json.JSONDecodeError, ValueError) as e:
        raise RequestError(f"{where}: malformed JSON ({e})") from None


def decompress(body: bytes, encoding: str, limit: int) -> bytes:
    """A gzip or deflate body, inflated to at most ``limit`` bytes (a 413 RequestError beyond)."""
    import zlib
    windows = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
    if encoding not in windows:
        raise RequestError(f"Content-Encoding: {encoding[:40]!r} is not supported; use gzip, deflate or none", 415)
    inflater = zlib.decompressobj(windows[encoding])
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as e:
        raise RequestError(f"body: not valid {encoding} data ({e})") from None
    if len(out) > limit:
        raise RequestError(f"body: over the limit of {limit} bytes once decompressed", 413)
    if not inflater.eof:
        raise RequestError(f"body: truncated {encoding} data")
    return out


def dumps(payload) -> bytes:
    """JSON bytes of a response (NaN and infinities written as ``NaN``/``Infinity``, as Python reads)."""
    return json_codec.dumps(payload)


def _field(obj: dict, key: str, where: str, types, required: bool = True):
    if key not in obj:
        if required:
            raise RequestError(f"{where}.{key}: missing")
        return None
    value = obj[key]
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in _as_tuple(types)):
        names = " or ".join(t.__name__ for t in _as_tuple(types))
        raise RequestError(f"{where}.{key}: expected {names}, got {type(value).__name__} {_short(value)}")
    return value


def _as_tuple(types):
    return types if isinstance(types, tuple) else (types,)


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# ------------------------------------------------------------------ infer requests
def parse_infer_request(body: bytes, header_length: str | None = None) -> InferRequest:
    """Decode a v2 ``infer`` body; ``header_length`` is the Inference-Header-Content-Length header."""
    binary = b""
    if header_length is not None:
        try:
            size = int(header_length)
        except ValueError:
            raise RequestError(f"Inference-Header-Content-Length: not an integer: {_short(header_length)}") from None
        if not 0 < size <= len(body):
            raise RequestError(f"Inference-Header-Content-Length: {size} is outside the body's {len(body)} bytes")
        body, binary = body[:size], body[size:]
    request = load_json(body, "body")
    if not isinstance(request, dict):
        raise RequestError(f"body: expected a JSON object, got {type(request).__name__}")
    raw_inputs = _field(request, "inputs", "body", list)
    if not raw_inputs:
        raise RequestError("body.inputs: empty; give at least one input tensor")
    offset = 0
    inputs = []
    for i, raw in enumerate(raw_inputs):
        tensor, offset = _parse_input(raw, f"inputs[{i}]", binary, offset)
        inputs.append(tensor)
    if offset != len(binary):
        raise RequestError(f"body: {len(binary) - offset} bytes of binary data after the last input tensor")
    names = [t.name for t in inputs]
    if len(set(names)) != len(names):
        raise RequestError(f"body.inputs: duplicate tensor names {sorted({n for n in names if names.count(n) > 1})}")
    parameters = _field(request, "parameters", "body", dict, required=False) or {}
    binary_output = bool(_field(parameters, "binary_data_output", "body.parameters", bool, required=False))
    request_id = _field(request, "id", "body", str, required=False)
    return InferRequest(inputs, _parse_outputs(request, binary_output), binary_output, request_id)


def _parse_outputs(request: dict, binary_default: bool) -> list:
    raw_outputs = _field(request, "outputs", "body", list, required=False) or []
    outputs = []
    for i, raw in enumerate(raw_outputs):
        where = f"outputs[{i}]"
        if not isinstance(raw, dict):
            raise RequestError(f"{where}: expected an object with a name, got {type(raw).__name__}")
        name = _field(raw, "name", where, str)
        params = _field(raw, "parameters", where, dict, required=False) or {}
        wants_binary = _field(params, "binary_data", f"{where}.parameters", bool, required=False)
        outputs.append((name, binary_default if wants_binary is None else wants_binary))
    return outputs


def _parse_input(raw, where: str, binary: bytes, offset: int):
    if not isinstance(raw, dict):
        raise RequestError(f"{where}: expected a tensor object (name, shape, datatype, data), got {type(raw).__name__}")
    name = _field(raw, "name", where, str)
    where = f"{where} ({name!r})"
    shape = _field(raw, "shape", where, list)
    if not all(type(d) is int and 0 <= d < 2 ** 40 for d in shape):
        raise RequestError(f"{where}.shape: expected a list of non-negative integers, got {_short(shape)}")
    datatype = _field(raw, "datatype", where, str)
    if datatype not in DATATYPES:
        raise RequestError(f"{where}.datatype: unknown datatype {_short(datatype)}; "
                           f"expected one of {', '.join(DATATYPES)}")
    params = _field(raw, "parameters", where, dict, required=False) or {}
    size = _field(params, "binary_data_size", f"{where}.parameters", int, required=False)
    count = math.prod(shape)
    if size is not None:
        if size < 0 or offset + size > len(binary):
            raise RequestError(f"{where}.parameters.binary_data_size: {size} bytes, but only "
                               f"{len(binary) - offset} bytes of binary data remain")
        array = _from_binary(binary[offset:offset + size], datatype, count, where)
        offset += size
    elif "data" in raw:
        array = _from_json(raw["data"], datatype, count, where)
    else:
        raise RequestError(f"{where}.data: missing (and no parameters.binary_data_size)")
    return Tensor(name, array.reshape(shape), datatype), offset


def _from_json(data, datatype: str, count: int, where: str) -> np.ndarray:
    if not isinstance(data, list):
        data = [data]
    try:
        array = np.asarray(data)
    except (ValueError, TypeError, OverflowError):
        raise RequestError(f"{where}.data: not a regular (rectangular) array of values") from None
    if array.size != count:
        raise RequestError(f"{where}.data: {array.size} values, but shape holds {count}")
    family = datatype.rstrip("0123456789")
    if count and array.dtype.kind not in _JSON_KINDS[family]:
        raise RequestError(f"{where}.data: {_kind_name(array)} values do not match datatype {datatype}")
    if datatype == "BYTES":
        return array.astype(object).ravel()
    target = DATATYPES[datatype]
    with np.errstate(over="ignore", invalid="ignore"):
        converted = array.astype(target, copy=False).ravel()
    if family in ("INT", "UINT") and not np.array_equal(converted, array.ravel()):
        raise RequestError(f"{where}.data: values outside the range of {datatype}")
    return converted


def _kind_name(array: np.ndarray) -> str:
    return {"b": "boolean", "i": "integer", "u": "integer", "f": "floating-point", "U": "string",
            "O": "mixed or out-of-range"}.get(array.dtype.kind, array.dtype.name)


def _from_binary(chunk: bytes, datatype: str, count: int, where: str) -> np.ndarray:
    if datatype == "BYTES":
        return _bytes_elements(chunk, count, where)
    dtype = DATATYPES[datatype]
    if len(chunk) != count * dtype.itemsize:
        raise RequestError(f"{where}.parameters.binary_data_size: {len(chunk)} bytes, but {count} "
                           f"{datatype} values take {count * dtype.itemsize}")
    array = np.frombuffer(chunk, dtype=dtype)
    return array.astype(np.bool_) if datatype == "BOOL" else array


def _bytes_elements(chunk: bytes, count: int, where: str) -> np.ndarray:
    """BYTES in the binary extension: each element is a 4-byte little-endian length, then the bytes."""
    if count * 4 > len(chunk):
        raise RequestError(f"{where}: {len(chunk)} bytes cannot hold {count} BYTES elements (4-byte lengths)")
    out = np.empty(count, dtype=object)
    pos = 0
    for i in range(count):
        if pos + 4 > len(chunk):
            raise RequestError(f"{where}: binary BYTES data ends at element {i} of {count}")
        n = int.from_bytes(chunk[pos:pos + 4], "little")
        if pos + 4 + n > len(chunk):
            raise RequestError(f"{where}: binary BYTES element {i} claims {n} bytes past the end of the data")
        out[i] = chunk[pos + 4:pos + 4 + n]
        pos += 4 + n
    if pos != len(chunk):
        raise RequestError(f"{where}: {len(chunk) - pos} bytes after the last BYTES element")
    return out


# ------------------------------------------------------------------ infer responses
def datatype_of(array: np.ndarray) -> str:
    """The v2 datatype of a NumPy array (strings and objects are BYTES)."""
    array = np.asarray(array)
    if array.dtype.kind in "OUSV":
        return "BYTES"
    for name, dtype in DATATYPES.items():
        if name != "BYTES" and dtype == array.dtype.newbyteorder("<"):
            return name
    raise TypeError(f"outputs of dtype {array.dtype} have no Open Inference Protocol datatype")


def encode_infer_response(model_name: str, version: str, request_id, outputs: list,
                          binary_names: set) -> tuple[bytes, dict]:
    """Response body and extra headers for ``outputs`` (:class:`Tensor`), ``binary_names`` in binary."""
    entries, chunks = [], []
    for tensor in outputs:
        array = np.asarray(tensor.array)
        entry = {"name": tensor.name, "datatype": tensor.datatype, "shape": list(array.shape)}
        if tensor.name in binary_names:
            raw = _to_binary(array, tensor.datatype)
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = _to_json_values(array, tensor.datatype)
        entries.append(entry)
    payload = {"model_name": model_name, "model_version": version, "outputs": entries}
    if request_id is not None:
        payload["id"] = request_id
    header = dumps(payload)
    if not chunks:
        return header, {"content-type": "application/json"}
    return header + b"".join(chunks), {"content-type": "application/octet-stream",
                                       "inference-header-content-length": str(len(header))}


def _to_binary(array: np.ndarray, datatype: str) -> bytes:
    if datatype != "BYTES":
        return np.ascontiguousarray(array, dtype=DATATYPES[datatype]).tobytes()
    parts = []
    for value in array.ravel():
        raw = value if isinstance(value, bytes) else str(value).encode("utf-8")
        parts.append(len(raw).to_bytes(4, "little") + raw)
    return b"".join(parts)


def _to_json_values(array: np.ndarray, datatype: str) -> list:
    flat = array.ravel()
    if datatype == "BYTES":
        return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in flat]
    return json_codec.jsonable(flat, np.ndarray.tolist)


# ------------------------------------------------------------------ plain JSON (/predict)
PLAIN_KEYS = ("inputs", "instances", "dataframe_split", "dataframe_records")


@dataclass
class PlainRequest:
    """A decoded ``/predict`` body: the data (array or DataFrame) and whether to return probabilities."""

    data: object
    proba: bool = False


def parse_plain_request(body: bytes) -> PlainRequest:
    """Decode ``{"inputs": …}``, ``{"instances": …}``, ``{"dataframe_split": …}`` or ``{"dataframe_records": …}``."""
    request = load_json(body, "body")
    if not isinstance(request, dict):
        raise RequestError(f"body: expected a JSON object with one of {', '.join(PLAIN_KEYS)}, "
                           f"got {type(request).__name__}")
    present = [k for k in PLAIN_KEYS if k in request]
    if len(present) != 1:
        found = f"got {', '.join(present)}" if present else f"got keys {sorted(request)[:10]}"
        raise RequestError(f"body: expected exactly one of {', '.join(PLAIN_KEYS)}; {found}")
    key = present[0]
    params = _field(request, "params", "body", dict, required=False) or {}
    proba = bool(_field(params, "proba", "body.params", bool, required=False))
    value = request[key]
    if key == "dataframe_split":
        return PlainRequest(_dataframe_split(value), proba)
    if key == "dataframe_records":
        return PlainRequest(_dataframe_records(value), proba)
    if isinstance(value, dict):
        return PlainRequest(_columns(value, f"body.{key}"), proba)
    return PlainRequest(_rows(value, f"body.{key}"), proba)


def _rows(value, where: str) -> np.ndarray:
    if not isinstance(value, list) or not value:
        raise RequestError(f"{where}: expected a non-empty list of rows, got {_short(value)}")
    try:
        array = np.asarray(value)
    except (ValueError, TypeError, OverflowError):
        raise RequestError(f"{where}: rows of different lengths (not a rectangular array)") from None
    if array.dtype.kind not in "biufU":
        raise RequestError(f"{where}: values must be numbers, booleans or strings ({_kind_name(array)} found)")
    return array


def _pandas():
    try:
        import pandas
    except ImportError:  # pragma: no cover - pandas is part of the serve extra
        raise RequestError("DataFrame inputs need pandas (pip install 'stepline[serve]')", 422) from None
    return pandas


def _columns(value: dict, where: str):
    lengths = set()
    for name, column in value.items():
        if not isinstance(column, list):
            raise RequestError(f"{where}[{name!r}]: expected a list of values, got {_short(column)}")
        lengths.add(len(column))
    if len(lengths) != 1 or 0 in lengths:
        raise RequestError(f"{where}: columns must be non-empty lists of one length, got lengths {sorted(lengths)}")
    return _checked_frame(_pandas().DataFrame(value), where)


def _dataframe_split(value):
    where = "body.dataframe_split"
    if not isinstance(value, dict):
        raise RequestError(f"{where}: expected an object with columns and data, got {_short(value)}")
    columns = _field(value, "columns", where, list, required=False)
    data = _field(value, "data", where, list)
    if not data or not all(isinstance(row, list) for row in data):
        raise RequestError(f"{where}.data: expected a non-empty list of rows (lists)")
    widths = {len(row) for row in data}
    if len(widths) != 1:
        raise RequestError(f"{where}.data: rows of different lengths {sorted(widths)[:5]}")
    if columns is not None:
        if not all(isinstance(c, str) for c in columns) or len(set(columns)) != len(columns):
            raise RequestError(f"{where}.columns: expected distinct column names (strings)")
        if len(columns) != widths.pop():
            raise RequestError(f"{where}: {len(columns)} columns but rows of {len(data[0])} values")
    return _checked_frame(_pandas().DataFrame(data, columns=columns), where)


def _dataframe_records(value):
    where = "body.dataframe_records"
    if not isinstance(value, list) or not value or not all(isinstance(r, dict) for r in value):
        raise RequestError(f"{where}: expected a non-empty list of records (objects)")
    keys = set(value[0])
    for i, record in enumerate(value):
        if set(record) != keys:
            raise RequestError(f"{where}[{i}]: fields {sorted(record)} differ from the first record's {sorted(keys)}")
    return _checked_frame(_pandas().DataFrame.from_records(value), where)


def _checked_frame(frame, where: str):
    for name in frame.columns:
        values = frame[name]
        if values.dtype == object and not all(v is None or isinstance(v, (str, bool, int, float))
                                              for v in values):
            raise RequestError(f"{where}: column {name!r} holds nested values; expected numbers, "
                               f"booleans or strings")
    return frame
