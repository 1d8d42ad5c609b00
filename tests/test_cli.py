"""The ``stepline`` command itself: ``--version``, help texts in plain words, the demo's wording."""
import re
import subprocess
import sys

import pytest

import stepline
from stepline import cli

REST_MARKUP = re.compile(r"``|:(class|func|meth|mod|data|attr|exc):`")


def stepline_cli(*args, timeout=180):
    return subprocess.run([sys.executable, "-m", "stepline", *args], capture_output=True, text=True, timeout=timeout)


def test_version():
    result = stepline_cli("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"stepline {stepline.__version__}"


@pytest.mark.parametrize("command", [None, *cli._COMMANDS])
def test_help_has_no_rest_markup(command, capsys):
    args = ["--help"] if command is None else [command, "--help"]
    try:
        __import__(cli._COMMANDS[command][0]) if command else None
    except ImportError as error:  # a command whose module another issue builds
        pytest.skip(f"{command}: {error}")
    with pytest.raises(SystemExit) as exit_info:
        cli.main(args)
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert text.strip() and not REST_MARKUP.search(text), text
    assert "the seed's" not in text


def test_demo_prints_no_convergence_warning_and_names_what_it_runs(tmp_path):
    pytest.importorskip("sklearn")
    for seed in (0, 1, 2, 3):
        result = stepline_cli("demo", "--out", str(tmp_path / str(seed)), "--seed", str(seed))
        assert result.returncode == 0, result.stderr
        text = result.stdout + result.stderr
        assert "ConvergenceWarning" not in text and "failed to converge" not in text, text
        assert "the seed's" not in text
        assert "DataShuffler" in text.splitlines()[0] and "LogisticRegression" in text.splitlines()[0]
