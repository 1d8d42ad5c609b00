"""The stepline command: run the demo, inspect, verify and trust dumps, serve them, score files."""
from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> (module, help); each module has add_arguments(parser) and run(args) -> int.
# Only the module of the command asked for is imported (the demo needs scikit-learn, inspect does not).
_COMMANDS = {
    "demo": ("stepline.demo", "fit a small pipeline (DataShuffler, NumpyRavel, LogisticRegression), save it, "
                              "load it in a fresh process"),
    "inspect": ("stepline.saving.inspect_cli", "print a saved step tree from its manifests, unpickling nothing"),
    # each command below lives in its own module (added by the issue that builds it)
    "verify": ("stepline.trust.verify_cli", "report a dump's signer, root digest and integrity"),
    "trust": ("stepline.trust.trust_cli", "trust one dump (its root digest) or a public key"),
    "serve": ("stepline.serving.serve_cli", "serve a dump over HTTP (Open Inference Protocol v2 and /predict)"),
    "predict": ("stepline.serving.predict_cli", "score a CSV/Parquet/NPY/JSON-lines file with a dump, in batches"),
}


def main(argv: list[str] | None = None) -> int:
    from stepline import __version__
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(prog="stepline", description=__doc__)
    parser.add_argument("--version", action="version", version=f"stepline {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{" + ",".join(_COMMANDS) + "}")
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, (module_name, help_text) in _COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            importlib.import_module(module_name).add_arguments(command)
    args = parser.parse_args(argv)
    return importlib.import_module(_COMMANDS[args.command][0]).run(args)


if __name__ == "__main__":
    sys.exit(main())
