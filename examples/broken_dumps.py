"""What stepline says about a broken dump: one clear error naming the path and the reason.

Saves a small pipeline, breaks copies of it in a few of the ways a dump gets broken
(a flipped bit, a hand edit, a FIFO where a file belongs, a wrong name), and prints the
error each load raises; then prints `stepline inspect --json`'s view of the intact dump.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from stepline import CX, Pipeline
from stepline.saving import StepLoadError
from stepline.steps.numpy import AddN, MultiplyByN


def flip_a_bit(dump: Path) -> None:
    manifest = dump / "p" / "stepline.json"
    data = bytearray(manifest.read_bytes())
    data[data.index(b'"created": "') + 14] ^= 0x01  # the date stays valid JSON: only the digest can tell
    manifest.write_bytes(bytes(data))


def edit_by_hand(dump: Path) -> None:
    manifest = dump / "p" / "AddN" / "stepline.json"
    data = json.loads(manifest.read_text())
    data["hyperparams"]["add"] = 100
    manifest.write_text(json.dumps(data, indent=2))


def fifo_as_lock_file(dump: Path) -> None:
    (dump / ".p.lock").unlink(missing_ok=True)
    os.mkfifo(dump / ".p.lock")  # a plain open() of it would block for ever


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        original = Path(tmp) / "original"
        Pipeline([MultiplyByN(2), AddN(1)], name="p").save(CX(original), full_dump=True)
        for breakage in (flip_a_bit, edit_by_hand, fifo_as_lock_file):
            broken = Path(tmp) / breakage.__name__
            shutil.copytree(original / "p", broken / "p")
            breakage(broken)
            try:
                CX(broken).load("p")
            except StepLoadError as error:
                print(f"{breakage.__name__}: {type(error).__name__}: {error}")
        try:
            CX(original).load("pp")
        except StepLoadError as error:
            print(f"wrong name: {type(error).__name__}: {error}")
        tree = json.loads(subprocess.run([sys.executable, "-m", "stepline", "inspect", "--json", str(original / "p")],
                                         capture_output=True, text=True, check=True).stdout)
        print("inspect --json:", tree["step"]["name"], [c["name"] for c in tree["step"]["children"]],
              "root digest", tree["root_digest"][:16] + "…")


if __name__ == "__main__":
    main()
