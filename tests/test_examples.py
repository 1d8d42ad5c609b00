"""Every script in ``examples/`` runs to completion from a foreign working directory."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).resolve().parent.parent / "examples").glob("*.py"))
TIMEOUT = 120


# What each extra brings, and the optional modules an example may import itself.
EXTRAS = {"sklearn": ["sklearn"], "torch": ["torch", "safetensors"], "dask": ["distributed"],
          "automl": ["optuna", "matplotlib"], "serve": ["starlette", "uvicorn"]}
OPTIONAL = {"sklearn", "torch", "dask", "distributed", "optuna", "matplotlib", "starlette", "uvicorn",
            "httpx", "pandas", "pyarrow", "tritonclient"}


def needed_modules(script: Path) -> list[str]:
    """The optional modules ``script`` needs: the extras its docstring names
    (``stepline[serve,...]``) and the optional packages it imports."""
    import ast
    tree = ast.parse(script.read_text())
    needed = [m for extras in re.findall(r"stepline\[([a-z,]+)\]", ast.get_docstring(tree) or "")
              for extra in extras.split(",") for m in EXTRAS[extra]]
    for node in ast.walk(tree):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else []
        needed += [n.split(".")[0] for n in names if n.split(".")[0] in OPTIONAL]
    return sorted(set(needed))


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs(script, tmp_path):
    for module in needed_modules(script):  # an example of an extra not installed is skipped, named
        pytest.importorskip(module)
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
