"""``stepline predict PATH INPUT -o OUTPUT``: score a file with a dump, batch by batch.

Formats follow the file extensions, in and out: ``.csv``, ``.parquet``, ``.npy`` and
``.jsonl`` (JSON lines). Rows are read, predicted and written ``--batch-size`` at a time,
so memory stays bounded by one batch; the output appears (atomically) only when every row
was scored. A row the pipeline refuses is named in the error (its row number and the step
that raised). A progress bar is shown on a terminal.
"""
from __future__ import annotations

import argparse
import io
import itertools
import json
import os
import secrets
import sys
from pathlib import Path

import numpy as np

FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".npy": "npy", ".jsonl": "jsonl",
           ".ndjson": "jsonl"}


class PredictFileError(RuntimeError):
    """A file that cannot be read or scored; the message names the file and the row."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", metavar="PATH", help="the dump folder (the folder a save wrote)")
    parser.add_argument("input", metavar="INPUT", help="rows to score: .csv, .parquet, .npy or .jsonl")
    parser.add_argument("-o", "--output", required=True, help="where to write the outputs: .csv, .parquet, .npy or .jsonl")
    parser.add_argument("--batch-size", type=int, default=10_000, help="rows per predict call (default: 10000)")
    parser.add_argument("--proba", action="store_true", help="write class probabilities (the last step's predict_proba)")
    parser.add_argument("--trust", action="store_true", help="load the dump even if no trusted key signed it")
    parser.add_argument("--progress", action="store_true", help="show a progress bar even when not on a terminal")


def file_format(path: str, role: str) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise PredictFileError(f"{path}: unknown {role} format {suffix or '(no extension)'!r}; "
                               f"use one of {', '.join(sorted(FORMATS))}")
    return FORMATS[suffix]


# ------------------------------------------------------------------ reading
def read_batches(path: str, batch_size: int):
    """Yield ``(first_row, batch)``: DataFrames for csv/parquet/jsonl, arrays for npy."""
    kind = file_format(path, "input")
    start = 0
    try:
        for batch in _READERS[kind](path, batch_size):
            yield start, batch
            start += len(batch)
    except PredictFileError:
        raise
    except (OSError, ValueError, TypeError) as error:
        raise PredictFileError(f"{path}: cannot read as {kind} after row {start}: {error}") from error


def _csv(path, batch_size):
    import pandas
    with pandas.read_csv(path, chunksize=batch_size) as reader:
        yield from reader


def _jsonl(path, batch_size):
    """Batches of ``batch_size`` lines read by pandas; a line that is not JSON is named by its number."""
    import pandas
    with open(path, encoding="utf-8") as source:
        first_line = 1
        while lines := list(itertools.islice(source, batch_size)):
            if not any(line.strip() for line in lines):
                first_line += len(lines)
                continue
            try:
                yield pandas.read_json(io.StringIO("".join(lines)), lines=True, precise_float=True)
            except ValueError as error:
                raise PredictFileError(f"{path}: {_bad_line(lines, first_line) or error}") from error
            first_line += len(lines)


def _bad_line(lines: list, first_line: int) -> str | None:
    """``line N (counting from 1): <why>`` for the first of ``lines`` that is not a JSON object."""
    for number, line in enumerate(lines, first_line):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError as error:
            return f"line {number} (counting from 1) is not JSON: {error}"
        if not isinstance(value, dict):
            return f"line {number} (counting from 1): expected an object of columns, got {type(value).__name__}"
    return None


def _parquet(path, batch_size):
    import pyarrow.parquet as pq
    for record_batch in pq.ParquetFile(path).iter_batches(batch_size=batch_size):
        yield record_batch.to_pandas()


def _npy(path, batch_size):
    array = np.load(path, mmap_mode="r", allow_pickle=False)
    if array.ndim == 0:
        raise PredictFileError(f"{path}: holds a scalar, not rows")
    for start in range(0, len(array), batch_size):
        yield np.asarray(array[start:start + batch_size])


_READERS = {"csv": _csv, "jsonl": _jsonl, "parquet": _parquet, "npy": _npy}


def count_rows(path: str) -> int | None:
    """The number of rows when the format says it cheaply (for the progress bar)."""
    kind = file_format(path, "input")
    try:
        if kind == "npy":
            return len(np.load(path, mmap_mode="r", allow_pickle=False))
        if kind == "parquet":
            import pyarrow.parquet as pq
            return pq.ParquetFile(path).metadata.num_rows
    except (OSError, ValueError, TypeError):
        return None
    return None


# ------------------------------------------------------------------ writing
class _Writer:
    """Writes output batches to a temporary sibling, renamed to the output when complete."""

    def __init__(self, path: str):
        self.path = Path(path)
        self.kind = file_format(path, "output")
        if not self.path.parent.is_dir():
            raise PredictFileError(f"{path}: the folder {self.path.parent} does not exist (or is not a folder)")
        self.tmp = self.path.with_name(f".{self.path.name}.tmp-{secrets.token_hex(4)}")
        self._handle = None
        self._rows = 0
        self._row_shape = None
        self._dtype = None
        self._file = self._create(self.tmp.with_suffix(".raw") if self.kind == "npy" else self.tmp)

    def _create(self, path: Path):
        """A new regular file at ``path`` (O_EXCL: never written through whatever might be there), opened
        before any row is scored so that an output that cannot be written is said at once."""
        from stepline.saving.safe_open import open_regular
        try:
            return open_regular(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, PredictFileError, "output")
        except OSError as error:
            raise PredictFileError(f"{self.path}: cannot write the output here: "
                                   f"{error.strerror or error}") from error

    def write(self, outputs: np.ndarray, columns: list[str]) -> None:
        getattr(self, "_write_" + self.kind)(outputs, columns)
        self._rows += len(outputs)

    def _frame(self, outputs, columns):
        import pandas
        values = outputs.reshape(len(outputs), -1) if outputs.ndim > 1 else outputs[:, None]
        return pandas.DataFrame(values, columns=columns)

    def _text(self):
        return io.TextIOWrapper(io.BufferedWriter(self._file), encoding="utf-8", newline="")

    def _write_csv(self, outputs, columns):
        header = self._handle is None
        if header:
            self._handle = self._text()
        self._frame(outputs, columns).to_csv(self._handle, header=header, index=False)

    def _write_jsonl(self, outputs, columns):
        if self._handle is None:
            self._handle = self._text()
        from stepline.serving.tensors import to_jsonable
        rows = to_jsonable(outputs.reshape(len(outputs), -1) if outputs.ndim > 1 else outputs[:, None])
        self._handle.write("".join(json.dumps(dict(zip(columns, row))) + "\n" for row in rows))

    def _write_parquet(self, outputs, columns):
        import pyarrow
        import pyarrow.parquet as pq
        table = pyarrow.Table.from_pandas(self._frame(outputs, columns), preserve_index=False)
        if self._handle is None:
            self._handle = pq.ParquetWriter(self._file, table.schema)
        self._handle.write_table(table)

    def _write_npy(self, outputs, columns):
        if outputs.dtype == object:
            raise PredictFileError(f"{self.path}: .npy holds numbers; these outputs are {outputs.dtype} (use .csv)")
        if self._handle is None:
            self._handle = io.BufferedWriter(self._file)
            self._row_shape, self._dtype = outputs.shape[1:], outputs.dtype
        self._handle.write(np.ascontiguousarray(outputs, dtype=self._dtype).tobytes())

    def close(self) -> None:
        """Finish the file and move it into place."""
        if self._handle is None:
            raise PredictFileError("the input holds no rows: nothing was written")
        self._handle.close()
        self._file.close()
        if self.kind == "npy":
            self._finish_npy()
        os.replace(self.tmp, self.path)

    def _finish_npy(self):
        """Prepend the .npy header, now that the row count is known, and copy the raw rows after it."""
        raw = self.tmp.with_suffix(".raw")
        try:
            with io.BufferedWriter(self._create(self.tmp)) as out, open(raw, "rb") as source:
                header = {"descr": np.lib.format.dtype_to_descr(self._dtype), "fortran_order": False,
                          "shape": (self._rows, *self._row_shape)}
                np.lib.format.write_array_header_1_0(out, header)
                while chunk := source.read(1 << 22):
                    out.write(chunk)
        finally:
            raw.unlink(missing_ok=True)

    def abort(self) -> None:
        for handle in (self._handle, self._file):
            if handle is not None:
                try:
                    handle.close()
                except (OSError, ValueError):  # a write that failed half-way fails again on flush
                    pass
        self.tmp.unlink(missing_ok=True)
        self.tmp.with_suffix(".raw").unlink(missing_ok=True)


# ------------------------------------------------------------------ scoring
def output_columns(outputs: np.ndarray, version, proba: bool) -> list[str]:
    width = int(np.prod(outputs.shape[1:])) if outputs.ndim > 1 else 1
    if proba and version.classes is not None and len(version.classes) == width:
        return [f"proba_{c}" for c in version.classes.tolist()]
    prefix = "proba" if proba else "prediction"
    return [prefix] if width == 1 else [f"{prefix}_{i}" for i in range(width)]


def _prepare(batch, version, source: str):
    from stepline.serving.protocol import RequestError
    from stepline.serving.tensors import from_frame
    try:
        return from_frame(batch, version, source) if hasattr(batch, "columns") else batch
    except RequestError as error:
        raise PredictFileError(str(error)) from None


def score(version, batch, first_row: int, proba: bool, source: str):
    """Outputs for one batch; on failure, find and name the first row the pipeline refuses."""
    from stepline.serving.model import PredictionError
    run = version.predict_proba if proba else version.predict
    try:
        return run(batch)
    except PredictionError as error:
        for i in range(len(batch)):
            row = batch.iloc[i:i + 1] if hasattr(batch, "iloc") else batch[i:i + 1]
            try:
                run(row)
            except PredictionError as row_error:
                raise PredictFileError(f"{source}: row {first_row + i} (counting from 0): {row_error}") from row_error
        raise PredictFileError(f"{source}: rows {first_row}-{first_row + len(batch) - 1}: {error}") from error


def predict_file(path: str, input_path: str, output_path: str, batch_size: int = 10_000, proba: bool = False,
                 trusted: bool = False, progress: bool | None = None) -> int:
    """Score ``input_path`` with the dump at ``path`` into ``output_path``; returns the rows written."""
    from stepline.serving.model import LoadedVersion, dump_digest
    if batch_size < 1:
        raise PredictFileError(f"--batch-size: must be at least 1, got {batch_size}")
    file_format(input_path, "input")
    if not os.path.exists(input_path):
        raise PredictFileError(f"{input_path}: no such file")
    _check_dump(path)
    file_format(output_path, "output")
    if os.path.exists(output_path) and os.path.samefile(input_path, output_path):
        raise PredictFileError(f"{output_path}: is the input file; write the outputs to another file")
    writer = _Writer(output_path)
    try:
        version = LoadedVersion(Path(path), dump_digest(path), trusted)
    except BaseException as error:
        writer.abort()
        if isinstance(error, OSError):
            raise PredictFileError(f"{path}: not a stepline dump ({error.strerror or error})") from error
        raise
    if proba and not version.has_proba:
        writer.abort()
        version.teardown()
        raise PredictFileError(f"{path}: --proba: the last step has no predict_proba")
    from tqdm import tqdm
    show = sys.stderr.isatty() if progress is None else progress
    bar = tqdm(total=count_rows(input_path), unit="rows", disable=not show, file=sys.stderr)
    try:
        for first_row, batch in read_batches(input_path, batch_size):
            if not len(batch):  # a CSV of a header only
                continue
            outputs = np.asarray(score(version, _prepare(batch, version, input_path), first_row, proba, input_path))
            if outputs.dtype.kind == "U":
                outputs = outputs.astype(object)
            writer.write(outputs, output_columns(outputs, version, proba))
            bar.update(len(batch))
        if not writer._rows:
            raise PredictFileError(f"{input_path}: holds no rows; nothing was written")
        writer.close()
    except OSError as error:  # writing the output (reading and scoring raise PredictFileError)
        writer.abort()
        raise PredictFileError(f"{output_path}: cannot write the output: {error.strerror or error}") from error
    except BaseException:
        writer.abort()
        raise
    finally:
        bar.close()
        version.teardown()
    return writer._rows


def _check_dump(path) -> None:
    """Read the root manifest as a load would: a broken dump is one :class:`PredictFileError`."""
    from stepline.saving.errors import StepLoadError
    from stepline.saving.manifest import read_manifest
    try:
        read_manifest(path)
    except StepLoadError as error:
        raise PredictFileError(str(error)) from error


def run(args) -> int:
    from stepline.serving.model import ModelLoadError, OutputError
    try:
        rows = predict_file(args.path, args.input, args.output, args.batch_size, args.proba, args.trust,
                            True if args.progress else None)
    except (PredictFileError, ModelLoadError, OutputError) as error:
        print(f"stepline predict: {error}", file=sys.stderr)
        return 1
    print(f"wrote {rows} rows of {'probabilities' if args.proba else 'predictions'} to {args.output}")
    return 0
