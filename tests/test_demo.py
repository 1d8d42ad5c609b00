"""``stepline demo``: fits, saves, loads in a fresh process, and prints identical outputs."""
import json
import shutil
import subprocess
import sys

import pytest

pytest.importorskip("sklearn")

from stepline import demo  # noqa: E402

TIMEOUT = 180


def parse_outputs(text: str, label: str) -> list:
    lines = [line.strip() for line in text.splitlines() if line.strip().startswith(label + ":")]
    assert len(lines) == 1, f"expected one line starting with {label!r} in:\n{text}"
    return json.loads(lines[0][len(label) + 1:])


def check_run(result, out_dir):
    assert result.returncode == 0, result.stdout + result.stderr
    text = result.stdout
    before = parse_outputs(text, demo.BEFORE_LABEL)
    after = parse_outputs(text, demo.AFTER_LABEL)
    assert before == after and len(before) == demo.N_HELD_OUT
    assert set(before) <= {1, 2}
    assert "identical to the outputs before saving: yes" in text
    # the saved tree, printed from the manifests
    assert "LogisticRegression: stepline.steps.sklearn.SKLearnWrapper" in text
    assert "DataShuffler: stepline.steps.data.DataShuffler" in text
    assert (out_dir / demo.PIPELINE_NAME).is_dir()
    return before


def test_python_m_stepline_demo(tmp_path):
    out = tmp_path / "dump"
    result = subprocess.run([sys.executable, "-m", "stepline", "demo", "--out", str(out)],
                            cwd=tmp_path, capture_output=True, text=True, timeout=TIMEOUT)
    first = check_run(result, out)
    # a second run over the same folder replaces the dump and prints the same outputs
    again = subprocess.run([sys.executable, "-m", "stepline", "demo", "--out", str(out)],
                           cwd=tmp_path, capture_output=True, text=True, timeout=TIMEOUT)
    assert check_run(again, out) == first


@pytest.mark.skipif(shutil.which("stepline") is None, reason="the stepline console script is not installed")
def test_stepline_console_script_default_out(tmp_path):
    result = subprocess.run(["stepline", "demo", "--seed", "3"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=TIMEOUT)
    check_run(result, tmp_path / "stepline_demo")  # the default --out is ./stepline_demo


def test_loader_mode_reads_rows_from_stdin(tmp_path):
    subprocess.run([sys.executable, "-m", "stepline", "demo", "--out", str(tmp_path)], cwd=tmp_path,
                   capture_output=True, text=True, timeout=TIMEOUT, check=True)
    rows = [[6.0, 2.9, 4.5, 1.5], [7.7, 3.0, 6.1, 2.3]]
    result = subprocess.run([sys.executable, "-m", "stepline.demo", "--load", str(tmp_path / demo.PIPELINE_NAME)],
                            input=json.dumps(rows), capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [1, 2]


def test_sampling_resamples_refused_combinations():
    X_train, y_train, _, _ = demo.load_data(0)
    for seed in range(6):
        pipeline = demo.build_pipeline(seed)
        samples, refused = demo.sample_hyperparams(pipeline, X_train, y_train, seed)
        assert not (samples["LogisticRegression__dual"] and samples["LogisticRegression__penalty"] == "l1")
        for r in refused:  # refused by liblinear, or not converging within the sampled max_iter
            assert (r["dual"] and r["penalty"] == "l1") or r["max_iter"] < 200, r


def test_demo_reports_failure_in_one_line(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    args = type("Args", (), {"out": str(blocker / "sub"), "seed": 0, "verbose": False, "load": None})()
    assert demo.run(args) == 2  # refused before anything runs (tests/test_new_user.py)
    err = capsys.readouterr().err
    assert err.startswith("stepline demo: --out") and len(err.strip().splitlines()) == 1
