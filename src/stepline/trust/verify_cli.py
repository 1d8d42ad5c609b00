"""``stepline verify PATH``: signer, root digest, integrity, and whether the dump would load untrusted."""
from __future__ import annotations

import argparse
import sys

from stepline.saving.errors import StepLoadError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", help="a dump's root step folder, e.g. cache_folder/saved_pipeline_name")


def run(args) -> int:
    """Exit 0 for an intact dump (trusted or not), 2 for a broken one."""
    from stepline.trust.report import verify_lines
    try:
        lines, intact = verify_lines(args.path)
    except StepLoadError as error:
        print(f"stepline verify: {error}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0 if intact else 2
