"""Files ``stepline predict`` must refuse in one line, without a traceback or a half-written output."""
import json
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("sklearn")
pd = pytest.importorskip("pandas")

import serving_helpers as h  # noqa: E402
from attack_steps import two_feature_pipeline  # noqa: E402


def stepline_predict(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "stepline", "predict", *map(str, args)], capture_output=True,
                          text=True, timeout=120, env=h.server_env(), cwd=cwd)


@pytest.fixture(scope="module")
def two_feature_dump(tmp_path_factory):
    return h.save(two_feature_pipeline(), tmp_path_factory.mktemp("two"))


def test_predict_to_a_missing_folder_or_under_a_file_fails_in_one_line(two_feature_dump, tmp_path):
    pd.DataFrame({"a": [0.5, 1.0], "b": [0.0, 2.0]}).to_csv(tmp_path / "rows.csv", index=False)
    (tmp_path / "a_file").write_text("")
    for output in (tmp_path / "missing" / "out.csv", tmp_path / "a_file" / "out.csv"):
        result = stepline_predict(two_feature_dump, tmp_path / "rows.csv", "-o", output)
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
        assert str(output) in result.stderr and "stepline predict:" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "rows.csv"]


def test_predict_refuses_to_write_over_its_input(two_feature_dump, tmp_path):
    source = tmp_path / "rows.csv"
    pd.DataFrame({"a": [0.5, 1.0], "b": [0.0, 2.0]}).to_csv(source, index=False)
    before = source.read_bytes()
    (tmp_path / "sub").mkdir()
    for output in (source, tmp_path / "sub" / ".." / "rows.csv"):
        result = stepline_predict(two_feature_dump, source, "-o", output)
        assert result.returncode == 1 and "is the input" in result.stderr, result.stderr
    assert source.read_bytes() == before


def test_predict_on_a_header_only_csv_says_it_holds_no_rows(two_feature_dump, tmp_path):
    (tmp_path / "rows.csv").write_text("a,b\n")
    result = stepline_predict(two_feature_dump, tmp_path / "rows.csv", "-o", tmp_path / "out.csv")
    assert result.returncode == 1 and "holds no rows" in result.stderr, result.stderr
    assert not (tmp_path / "out.csv").exists()


def test_predict_on_json_lines_with_a_truncated_last_line_names_the_line(two_feature_dump, tmp_path):
    lines = [json.dumps({"a": float(i), "b": 0.5}) for i in range(25)]
    (tmp_path / "rows.jsonl").write_text("\n".join(lines)[:-7])
    result = stepline_predict(two_feature_dump, tmp_path / "rows.jsonl", "-o", tmp_path / "out.csv",
                              "--batch-size", 10)
    assert result.returncode == 1 and "line 25" in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rows.jsonl"]


def test_predict_on_a_csv_missing_a_column_names_it(tmp_path):
    folder = h.save(h.dataframe_pipeline(), tmp_path)
    frame, _ = h.people_frame(n=5)
    frame.drop(columns="income").to_csv(tmp_path / "rows.csv", index=False)
    result = stepline_predict(folder, tmp_path / "rows.csv", "-o", tmp_path / "out.csv")
    assert result.returncode == 1 and "missing columns ['income']" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_predict_when_the_disk_fills_mid_output_fails_in_one_line_and_leaves_no_file(two_feature_dump, tmp_path):
    import resource
    rows = np.random.default_rng(0).normal(size=(50_000, 2))
    np.save(tmp_path / "rows.npy", rows)
    out = tmp_path / "out" / "predictions.csv"
    out.parent.mkdir()

    def small_files():  # in the child: files of at most 64 KiB (writes past it fail with EFBIG)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, resource.RLIM_INFINITY))

    result = subprocess.run([sys.executable, "-m", "stepline", "predict", str(two_feature_dump),
                             str(tmp_path / "rows.npy"), "-o", str(out), "--batch-size", "5000"],
                            capture_output=True, text=True, timeout=120, env=h.server_env(), preexec_fn=small_files)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert "cannot write the output" in result.stderr and str(out) in result.stderr
    assert list(out.parent.iterdir()) == []
