"""``stepline trust PATH`` trusts one dump (its root digest); ``stepline trust --key FILE`` a public key."""
from __future__ import annotations

import argparse
import sys

from stepline.saving.errors import StepLoadError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("path", nargs="?", help="a dump's root step folder: trust exactly this dump")
    what.add_argument("--key", metavar="FILE", help="a public key (PEM, or 64 hex digits) whose signatures "
                                                    "to trust, e.g. a teammate's signing_key.pub")
    parser.add_argument("--label", default="", help="a note stored with the key (whose it is)")


def run(args) -> int:
    from stepline.trust import store
    if args.key:
        from stepline.trust.keys import read_public_key_file
        try:
            key = store.add_key(read_public_key_file(args.key), args.label or args.key)
        except OSError as error:
            from stepline.cli import describe_os_error
            print(f"stepline trust: --key {describe_os_error(error)}", file=sys.stderr)
            return 2
        except ValueError as error:
            print(f"stepline trust: {error}", file=sys.stderr)
            return 2
        print(f"trusted key {key} (in {store.store_path()})")
        return 0
    from stepline.trust.report import verify_lines
    from stepline.trust.signing import root_digest
    try:
        lines, intact = verify_lines(args.path)
        digest = root_digest(args.path)
    except StepLoadError as error:
        print(f"stepline trust: {error}", file=sys.stderr)
        return 2
    if not intact:
        print("\n".join(lines))
        print("stepline trust: not trusting a dump that fails its integrity check", file=sys.stderr)
        return 2
    store.add_digest(digest, str(args.path))
    print(f"trusted dump {args.path} (root digest {digest}, in {store.store_path()})")
    return 0
