"""Every script in ``examples/`` runs to completion from a foreign working directory."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).resolve().parent.parent / "examples").glob("*.py"))
TIMEOUT = 120


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs(script, tmp_path):
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path,
                            capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, f"{script.name} failed:\n{result.stdout}\n{result.stderr}"
    assert result.stdout.strip(), f"{script.name} printed nothing"
    leftovers = [p.name for p in tmp_path.iterdir()]
    assert leftovers == [], f"{script.name} left {leftovers} in its working directory"


def test_seed_saving_example_prints_the_seeds_lines():
    script = next(p for p in EXAMPLES if p.name == "seed_saving_example.py")
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    for expected in ("saved pipeline ! ", "loaded pipeline without any source code !"):
        assert expected in lines
    outputs = [line for line in lines if line.startswith("outputs: [")]
    assert len(outputs) == 2  # after fit_transform (shuffled order) and after loading
    first, after_load = ([int(x) for x in re.findall(r"-?\d+", line)] for line in outputs)
    assert sorted(first) == sorted(after_load)  # the same predictions, the first in shuffled order
