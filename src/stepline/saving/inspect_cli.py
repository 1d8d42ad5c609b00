"""``stepline inspect [--json] [--audit] PATH``: print a saved step tree from its manifests.

A broken dump exits 2 with the one error a load would raise, on stderr.
"""
from __future__ import annotations

import argparse
import json
import sys

from stepline.saving.errors import StepLoadError
from stepline.saving.inspect import describe, describe_tree


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", help="a saved step's folder, e.g. cache_folder/saved_pipeline_name")
    parser.add_argument("--json", action="store_true", help="print the tree as JSON (names, classes, savers, "
                                                            "hyperparameters, files, root digest)")
    parser.add_argument("--audit", action="store_true", help="also list the globals every pickle needs, "
                        "read from its opcodes, and whether an untrusted load may use them (docs/trust.md)")


def run(args) -> int:
    """Print the tree; exit 2, with the error on stderr, when the dump is broken."""
    try:
        if args.json:
            print(json.dumps(describe(args.path), indent=2, ensure_ascii=False))
        else:
            print("\n".join(describe_tree(args.path)))
        if getattr(args, "audit", False):
            from stepline.trust.report import audit_lines
            print("\n".join(audit_lines(args.path)))
    except StepLoadError as error:
        print(f"stepline inspect: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # e.g. the root manifest vanished between the checks and the digest
        print(f"stepline inspect: {error.filename or args.path}: {error.strerror or error}", file=sys.stderr)
        return 2
    return 0
