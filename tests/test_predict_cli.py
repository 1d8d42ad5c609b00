"""``stepline predict PATH INPUT -o OUTPUT``: files in every format, scored in batches, errors naming the row."""
import json
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("sklearn")
pd = pytest.importorskip("pandas")

import serving_helpers as h  # noqa: E402


def stepline(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "stepline", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=h.server_env())


@pytest.fixture(scope="module")
def bc_dump(tmp_path_factory):
    return h.save(h.sklearn_pipeline(), tmp_path_factory.mktemp("bc"))


def test_a_100000_row_csv_gives_the_in_process_predictions(bc_dump, tmp_path):
    X, _ = h.breast_cancer()
    rows = np.random.default_rng(0).normal(X.mean(0), X.std(0), size=(100_000, X.shape[1]))
    source = tmp_path / "rows.csv"
    pd.DataFrame(rows, columns=[f"f{i}" for i in range(X.shape[1])]).to_csv(source, index=False)
    result = stepline("predict", bc_dump, source, "-o", tmp_path / "out.csv", "--batch-size", "7000")
    assert result.returncode == 0, result.stderr
    assert "wrote 100000 rows" in result.stdout
    written = pd.read_csv(tmp_path / "out.csv")
    assert list(written.columns) == ["prediction"]
    expected = h.sklearn_pipeline().predict(np.loadtxt(source, delimiter=",", skiprows=1))
    np.testing.assert_array_equal(written["prediction"].to_numpy(), expected)


@pytest.mark.parametrize("source_kind", ["npy", "parquet", "jsonl"])
@pytest.mark.parametrize("target_kind", ["npy", "parquet", "jsonl", "csv"])
def test_every_format_in_and_out_with_probabilities(bc_dump, tmp_path, source_kind, target_kind):
    pytest.importorskip("pyarrow")
    X, _ = h.breast_cancer()
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])])
    source = tmp_path / f"rows.{source_kind}"
    {"npy": lambda: np.save(source, X), "parquet": lambda: frame.to_parquet(source),
     "jsonl": lambda: frame.to_json(source, orient="records", lines=True)}[source_kind]()
    target = tmp_path / f"out.{target_kind}"
    from stepline.serving.predict_cli import predict_file
    assert predict_file(bc_dump, str(source), str(target), batch_size=100, proba=True) == len(X)
    pipeline = h.sklearn_pipeline()
    expected = pipeline["LogisticRegression"].wrapped_sklearn_predictor.predict_proba(
        pipeline["StandardScaler"].transform(X))
    if target_kind == "npy":
        written = np.load(target)
    elif target_kind == "jsonl":
        lines = [json.loads(line) for line in target.read_text().splitlines()]
        assert list(lines[0]) == ["proba_0", "proba_1"]
        written = np.array([list(line.values()) for line in lines])
    else:
        written = (pd.read_parquet(target) if target_kind == "parquet" else pd.read_csv(target)).to_numpy()
    np.testing.assert_array_equal(written, expected)


def test_a_dataframe_pipeline_scores_a_csv_with_a_string_column(tmp_path):
    folder = h.save(h.dataframe_pipeline(), tmp_path)
    frame, _ = h.people_frame(n=500, seed=2)
    frame.to_csv(tmp_path / "people.csv", index=False)
    result = stepline("predict", folder, tmp_path / "people.csv", "-o", tmp_path / "out.jsonl", "--batch-size", 64)
    assert result.returncode == 0, result.stderr
    written = [json.loads(line)["prediction"] for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert written == h.dataframe_pipeline().predict(frame).tolist()


def test_an_error_names_the_row_and_writes_no_output(bc_dump, tmp_path):
    X, _ = h.breast_cancer()
    rows = X[:250].copy()
    rows[137, 4] = np.nan  # LogisticRegression refuses NaN
    np.save(tmp_path / "rows.npy", rows)
    result = stepline("predict", bc_dump, tmp_path / "rows.npy", "-o", tmp_path / "out.csv", "--batch-size", 100)
    assert result.returncode == 1
    assert "row 137" in result.stderr and "LogisticRegression" in result.stderr and "NaN" in result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rows.npy"]


@pytest.mark.parametrize("problem, args, message", [
    ("unknown input format", ["rows.txt", "-o", "out.csv"], "unknown input format '.txt'"),
    ("unknown output format", ["rows.npy", "-o", "out.xlsx"], "unknown output format '.xlsx'"),
    ("missing input", ["missing.npy", "-o", "out.csv"], "missing.npy"),
    ("bad batch size", ["rows.npy", "-o", "out.csv", "--batch-size", "0"], "--batch-size"),
])
def test_bad_arguments_get_one_line(bc_dump, tmp_path, problem, args, message):
    np.save(tmp_path / "rows.npy", np.zeros((3, 30)))
    (tmp_path / "rows.txt").write_text("1,2")
    result = subprocess.run([sys.executable, "-m", "stepline", "predict", str(bc_dump), *args], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120, env=h.server_env())
    assert result.returncode == 1, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr


def test_a_folder_that_is_not_a_dump(tmp_path):
    np.save(tmp_path / "rows.npy", np.zeros((3, 30)))
    result = stepline("predict", tmp_path, tmp_path / "rows.npy", "-o", tmp_path / "out.csv")
    assert result.returncode == 1 and "stepline predict:" in result.stderr and "Traceback" not in result.stderr
