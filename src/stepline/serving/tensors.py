"""Between the protocol's tensors and the pipeline's data: arrays, DataFrames, named outputs.

A pipeline fitted on a DataFrame (its first estimator has ``feature_names_in_``) takes one
v2 input tensor per column, or one 2-D tensor whose columns are its features in order;
any other pipeline takes one tensor, passed as the array it is. BYTES tensors become
string columns. Outputs are ``predictions`` and, when the last step has
``predict_proba``, ``probabilities``.
"""
from __future__ import annotations

import numpy as np

from stepline.serving.protocol import RequestError, Tensor

PREDICTIONS = "predictions"
PROBABILITIES = "probabilities"


def output_names(version) -> list[str]:
    """The outputs ``version`` can compute."""
    return [PREDICTIONS, PROBABILITIES] if version.has_proba else [PREDICTIONS]


def data_from_tensors(tensors: list, version):
    """The pipeline's input for decoded request tensors; RequestError names a wrong input."""
    names = version.feature_names
    if len(tensors) == 1 and not (names and tensors[0].name in names):
        return data_from_array(_strings(tensors[0].array, "inputs[0]"), version, "inputs[0]")
    if not names:
        raise RequestError(f"body.inputs: {len(tensors)} input tensors, but this model takes one "
                           f"(it was not fitted on named columns)")
    unknown = [t.name for t in tensors if t.name not in names]
    missing = [n for n in names if n not in {t.name for t in tensors}]
    if unknown or missing:
        raise RequestError(f"body.inputs: the model's input columns are {names}; "
                           + "; ".join(filter(None, [unknown and f"unknown {unknown}",
                                                     missing and f"missing {missing}"])))
    columns = {}
    for i, tensor in enumerate(tensors):
        array = tensor.array
        if array.ndim == 2 and array.shape[1] == 1:
            array = array[:, 0]
        if array.ndim != 1:
            raise RequestError(f"inputs[{i}] ({tensor.name!r}).shape: a column is [rows] or [rows, 1], "
                               f"got {list(tensor.array.shape)}")
        columns[tensor.name] = _strings(array, f"inputs[{i}]")
    lengths = {len(c) for c in columns.values()}
    if len(lengths) != 1:
        raise RequestError(f"body.inputs: columns of different lengths {sorted(lengths)}")
    import pandas
    return pandas.DataFrame({n: columns[n] for n in names})


def data_from_array(array: np.ndarray, version, where: str):
    """A 2-D array as the pipeline's input: a DataFrame with its feature names when it has them."""
    names = version.feature_names
    if array.ndim == 0:
        raise RequestError(f"{where}: a scalar; expected rows (a list of lists)")
    if names and array.ndim == 2:
        if array.shape[1] != len(names):
            raise RequestError(f"{where}: rows of {array.shape[1]} values, but the model takes "
                               f"{len(names)} columns {names}")
        import pandas
        return pandas.DataFrame(array, columns=names)
    return array


def from_frame(frame, version, where: str = "body"):
    """A DataFrame as the pipeline takes it: its columns the model was fitted on, in that order, when
    it has named columns (a RequestError names those missing; others are left out), else its
    values (row-major, like arrays read any other way: memory order changes a float result's last bits)."""
    names = version.feature_names
    if names:
        if list(frame.columns) == names:
            return frame
        missing = [n for n in names if n not in frame.columns]
        if missing:
            raise RequestError(f"{where}: missing columns {missing}; the model's input columns are {names}")
        return frame[names]
    return np.ascontiguousarray(frame.to_numpy())


def _strings(array: np.ndarray, where: str) -> np.ndarray:
    """BYTES elements (bytes) decoded to ``str``; other arrays unchanged."""
    if array.dtype != object:
        return array
    try:
        return np.array([v.decode("utf-8") if isinstance(v, bytes) else v for v in array.ravel()],
                        dtype=object).reshape(array.shape)
    except UnicodeDecodeError:
        raise RequestError(f"{where}: BYTES values are not UTF-8 text") from None


def as_output_tensor(name: str, outputs) -> Tensor:
    """A pipeline output as a tensor; strings become BYTES."""
    array = _sendable(np.asarray(outputs))
    if array.dtype.kind == "U":
        array = array.astype(object)
    return Tensor(name, array)


def _sendable(array: np.ndarray) -> np.ndarray:
    """Outputs whose dtype the protocol has no datatype for (dates, complex…) as strings."""
    if array.dtype.kind == "f" and array.dtype.itemsize > 8:
        return array.astype(np.float64)
    if array.dtype.kind in "biufOUS":
        return array
    return array.astype(str).astype(object)


def input_metadata(version) -> list[dict]:
    """The ``inputs`` of the model metadata."""
    if version.feature_names:
        return [{"name": n, "datatype": version.column_types.get(n, "FP64"), "shape": [-1]}
                for n in version.feature_names]
    datatype = "FP32" if type(version.final).__module__.startswith("stepline.torch") else "FP64"
    return [{"name": "input", "datatype": datatype, "shape": [-1, version.n_features or -1]}]


def output_metadata(version) -> list[dict]:
    """The ``outputs`` of the model metadata (datatypes from the class labels where known)."""
    classes = version.classes
    if classes is not None:
        label = "BYTES" if classes.dtype.kind in "OU" else as_output_tensor("", classes).datatype
        outputs = [{"name": PREDICTIONS, "datatype": label, "shape": [-1]}]
    elif type(version.final).__module__.startswith("stepline.torch"):
        outputs = [{"name": PREDICTIONS, "datatype": "FP32", "shape": [-1, -1]}]
    else:
        outputs = [{"name": PREDICTIONS, "datatype": "FP64", "shape": [-1]}]
    if version.has_proba:
        outputs.append({"name": PROBABILITIES, "datatype": "FP64", "shape": [-1, len(classes) if classes is not None else -1]})
    return outputs


def to_jsonable(array: np.ndarray) -> list:
    """Predictions as JSON values (bytes decoded, NumPy scalars as Python ones, dates as strings)."""
    array = _sendable(array)
    if array.dtype == object:
        return [v.decode("utf-8", "replace") if isinstance(v, bytes) else
                (v.item() if hasattr(v, "item") else v) for v in array.tolist()]
    return array.tolist()
