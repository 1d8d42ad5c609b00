"""The ``stepline`` command as a new user meets it: typos, missing paths, files, folders that are
not dumps. Each mistake gets one line on stderr naming what was wrong, a non-zero exit and no
Python traceback; every command that takes a dump says the same thing about the same path."""
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from stepline import CX, Identity, Pipeline

SRC = Path(__file__).resolve().parents[1] / "src"
DUMP_COMMANDS = {  # command -> its arguments around the dump path
    "inspect": lambda p: ["inspect", p],
    "verify": lambda p: ["verify", p],
    "trust": lambda p: ["trust", p],
    "predict": lambda p: ["predict", p, "rows.csv", "-o", "out.csv"],
    "serve": lambda p: ["serve", p, "--port", "0"],
}


def stepline(*args, cwd, timeout=60):
    """Run ``python -m stepline ARGS`` in ``cwd``; the CompletedProcess."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-m", "stepline", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def assert_one_clear_line(result, *expected):
    """Non-zero exit, one line on stderr that names each of ``expected``, no traceback, no errno."""
    assert result.returncode != 0, result
    assert "Traceback" not in result.stderr and "Errno" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for text in expected:
        assert text in lines[0], (text, lines[0])
    return lines[0]


@pytest.fixture
def workdir(tmp_path):
    """A working folder with a file, an empty folder, broken manifests and a folder of dumps."""
    (tmp_path / "afile").write_text("x")
    (tmp_path / "rows.csv").write_text("a,b\n1,2\n")
    (tmp_path / "empty").mkdir()
    (tmp_path / "garbage").mkdir()
    (tmp_path / "garbage" / "stepline.json").write_text("not json")
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "stepline.json").write_text('{"hello": 1}')
    Pipeline([Identity()]).set_name("model").save(CX(tmp_path / "dumps"), full_dump=True)
    return tmp_path


@pytest.mark.parametrize("case", ["missing", "afile", "empty", "garbage", "foreign", "dumps", "afile/inside"])
@pytest.mark.parametrize("command", list(DUMP_COMMANDS))
def test_every_dump_command_refuses_a_path_that_is_no_dump_as_inspect_does(workdir, command, case):
    if command == "serve":
        pytest.importorskip("uvicorn")
    if command == "predict":
        pytest.importorskip("pandas")
    reference = stepline("inspect", case, cwd=workdir)
    reason = assert_one_clear_line(reference, case.split("/")[0]).removeprefix("stepline inspect: ")
    result = stepline(*DUMP_COMMANDS[command](case), cwd=workdir)
    assert_one_clear_line(result, f"stepline {command}: ", reason)
    assert "Uvicorn running" not in result.stderr  # refused before a server starts


def test_the_message_for_a_folder_of_dumps_names_the_dumps_in_it(workdir):
    assert_one_clear_line(stepline("inspect", "dumps", cwd=workdir), "dumps", "model")


def test_a_typo_in_a_command_suggests_the_command(workdir):
    result = stepline("inpsect", "dumps/model", cwd=workdir)
    assert result.returncode == 2 and "did you mean 'inspect'?" in result.stderr, result.stderr


def test_a_typo_in_a_flag_is_reported_by_the_command_it_was_given_to(workdir):
    result = stepline("inspect", "--jsn", "dumps/model", cwd=workdir)
    assert result.returncode == 2, result
    assert "stepline inspect: error: unrecognized arguments: --jsn" in result.stderr, result.stderr
    assert "usage: stepline inspect" in result.stderr


def test_no_command_lists_the_commands(workdir):
    result = stepline(cwd=workdir)
    assert result.returncode == 2
    assert "inspect" in result.stderr and "print a saved step tree" in result.stderr, result.stderr


def test_trust_a_key_file_that_does_not_exist(workdir):
    assert_one_clear_line(stepline("trust", "--key", "nokey.pub", cwd=workdir),
                          "stepline trust: ", "nokey.pub", "no such file")


def test_demo_out_that_is_a_file_is_refused_before_anything_runs(workdir):
    result = stepline("demo", "--out", "afile", cwd=workdir)
    assert_one_clear_line(result, "stepline demo: ", "--out", "afile", "a file, not a folder")
    assert result.stdout == ""


def test_demo_loader_on_a_missing_dump_says_so(workdir):
    assert_one_clear_line(stepline("demo", "--load", "missing", cwd=workdir), "stepline demo: ", "missing",
                          "no such dump")


def test_predict_an_input_file_that_does_not_exist(workdir):
    pytest.importorskip("pandas")
    assert_one_clear_line(stepline("predict", "dumps/model", "nothere.csv", "-o", "out.csv", cwd=workdir),
                          "stepline predict: ", "nothere.csv", "no such file")
    assert not (workdir / "out.csv").exists()


@pytest.mark.parametrize("port", ["70000", "-1"])
def test_serve_a_port_outside_the_range_is_refused(workdir, port):
    pytest.importorskip("uvicorn")
    assert_one_clear_line(stepline("serve", "dumps/model", "--port", port, cwd=workdir, timeout=30),
                          "stepline serve: ", "--port", port)


def _public_methods(cls):
    for klass in cls.__mro__:
        if not klass.__module__.startswith("stepline"):
            continue
        for name, value in vars(klass).items():
            if not name.startswith("_") and inspect.isfunction(value):
                yield f"{cls.__name__}.{name}", getattr(cls, name)


def test_every_top_level_name_and_its_public_methods_have_a_docstring():
    import stepline
    missing = []
    for name in stepline.__all__:
        value = getattr(stepline, name)
        if inspect.isclass(value):
            missing += [name] if not inspect.getdoc(value) else []
            missing += [where for where, method in _public_methods(value) if not inspect.getdoc(method)]
    assert not missing, missing


def test_dir_of_the_package_shows_its_names_and_public_modules_only():
    import stepline
    names = dir(stepline)
    assert set(stepline.__all__) <= set(names) and {"base", "pipeline", "hyperparams"} <= set(names)
    assert not {"core", "estimator_api"} & set(names), names
    assert not [n for n in names if n.startswith("_") and n != "__version__"], names
    assert inspect.getdoc(stepline).splitlines()[0].startswith("ML pipelines")


DOCS = Path(__file__).resolve().parents[1] / "docs"
OTHERS_DOCS = {"trust.md", "serving.md"}  # their snippets show a session, not a script (owned elsewhere)
NEEDS = {"deep_learning.md": ["torch"], "automl.md": ["optuna", "torch"], "dask.md": ["distributed"],
         "sklearn.md": ["sklearn"], "saving.md": ["sklearn"], "parallel.md": ["sklearn"]}


@pytest.mark.parametrize("doc", sorted(p.name for p in DOCS.glob("*.md") if p.name not in OTHERS_DOCS))
def test_the_python_blocks_of_a_doc_run_in_order_as_a_new_user_pastes_them(doc, tmp_path):
    for module in NEEDS.get(doc, []):
        pytest.importorskip(module)
    blocks = re.findall(r"```python\n(.*?)```", (DOCS / doc).read_text(), re.S)
    if not blocks:
        pytest.skip(f"{doc} has no python block")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]))
    script = tmp_path / "pasted.py"  # a file, as a user pastes them: worker processes import it
    script.write_text("\n".join(blocks))
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, f"{doc}:\n{result.stderr[-3000:]}"


class Doubler(Identity):
    """A class of this test module: not on the allow-list of an untrusted load."""


def test_serve_refuses_an_untrusted_dump_in_one_message_before_a_server_starts(tmp_path):
    pytest.importorskip("uvicorn")
    Pipeline([Doubler()]).set_name("m").save(CX(tmp_path), full_dump=True)
    (tmp_path / "m" / "stepline.sig").unlink()  # signed by no one: untrusted
    result = stepline("serve", "m", "--port", "0", cwd=tmp_path)
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr and "Uvicorn running" not in result.stderr, result.stderr
    assert result.stderr.startswith("stepline serve: UntrustedDumpError: m: untrusted dump")
    assert "Doubler" in result.stderr and "--trust" in result.stderr


def test_serve_a_dump_changed_by_hand_fails_startup_in_one_logged_line(tmp_path):
    pytest.importorskip("uvicorn")
    Pipeline([Identity(), Pipeline([Identity()], name="inner")]).set_name("m").save(CX(tmp_path), full_dump=True)
    child = tmp_path / "m" / "inner" / "stepline.json"
    child.write_text(child.read_text().replace('"name": "inner"', '"name": "inner" '))
    result = stepline("serve", "m", "--port", "0", cwd=tmp_path)
    assert result.returncode != 0, result
    assert "Traceback" not in result.stderr and "Uvicorn running" not in result.stderr, result.stderr
    assert "cannot serve: " in result.stderr and "m/inner" in result.stderr, result.stderr


@pytest.mark.parametrize("seed", ["-1", "x"])
def test_demo_a_seed_numpy_cannot_take_is_refused_naming_the_option(workdir, seed):
    result = stepline("demo", "--seed", seed, cwd=workdir)
    assert result.returncode == 2 and result.stdout == "", result
    assert f"argument --seed: must be an integer, 0 or more, got '{seed}'" in result.stderr, result.stderr


def test_predict_into_a_folder_that_does_not_exist_names_the_output(workdir):
    pytest.importorskip("pandas")
    result = stepline("predict", "dumps/model", "rows.csv", "-o", "nodir/out.csv", cwd=workdir)
    assert_one_clear_line(result, "stepline predict: nodir/out.csv: the folder nodir does not exist")


def test_a_warning_while_a_command_runs_is_one_line_naming_the_command(tmp_path):
    pytest.importorskip("pandas")
    save = ("import stepline.saving.manifest as m; real = m.runtime_versions; "
            "m.runtime_versions = lambda: {**real(), 'numpy': '1.0.0'}; "
            "from stepline import CX, Pipeline; from stepline.steps.numpy import MultiplyByN; "
            "Pipeline([MultiplyByN(2)]).set_name('m').save(CX('.'), full_dump=True)")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]))
    subprocess.run([sys.executable, "-c", save], cwd=tmp_path, env=env, check=True, timeout=60)
    (tmp_path / "rows.csv").write_text("a\n1\n")
    result = stepline("predict", "m", "rows.csv", "-o", "out.csv", cwd=tmp_path)
    assert result.returncode == 0, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("stepline predict: VersionMismatchWarning: "), result.stderr
    assert "numpy: saved with 1.0.0" in lines[0]
