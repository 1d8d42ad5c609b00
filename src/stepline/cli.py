"""The ``stepline`` command: ``stepline demo`` and ``stepline inspect PATH``."""
from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> (module, help); each module has add_arguments(parser) and run(args) -> int
_COMMANDS = {
    "demo": ("stepline.demo", "run the seed's example end to end: fit, save, load in a fresh process"),
    "inspect": ("stepline.saving.inspect", "print a saved step tree from its manifests, unpickling nothing"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stepline", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module_name, help_text) in _COMMANDS.items():
        command = sub.add_parser(name, help=help_text)
        command.set_defaults(_module=module_name)
        importlib.import_module(module_name).add_arguments(command)
    args = parser.parse_args(argv)
    return importlib.import_module(args._module).run(args)


if __name__ == "__main__":
    sys.exit(main())
