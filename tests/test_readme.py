"""The README's example runs as written, and its two commands are the ones CI and users run."""
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_readme_example_runs(tmp_path):
    code = re.search(r"```python\n(.*?)```", README, re.S).group(1)
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "cache_folder" / "model" / "stepline.json").is_file()


def test_readme_names_the_demo_and_test_commands():
    assert "stepline demo" in README and "python -m pytest -q" in README
    assert "python -m pytest -q" in (ROOT / ".ci" / "run").read_text()
