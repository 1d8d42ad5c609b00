"""The stepline command: run the demo, inspect, verify and trust dumps, serve them, score files."""
from __future__ import annotations

import argparse
import difflib
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
    """Run ``stepline ARGV``; returns the exit status (2 for a mistake in the command line or its paths)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    chosen = next((a for a in argv if not a.startswith("-")), None)
    parser, commands = _parser(chosen)
    if not argv:
        parser.print_help(sys.stderr)
        return 2
    if chosen is not None and chosen not in _COMMANDS and not any(a in ("-h", "--help", "--version") for a in argv):
        return _unknown_command(parser, chosen)
    args, extra = parser.parse_known_args(argv)
    if extra:  # reported by the command's own parser, with its usage line
        commands[args.command].error(f"unrecognized arguments: {' '.join(extra)}")
    return _run(args)


def _parser(chosen: str | None) -> tuple[argparse.ArgumentParser, dict]:
    """The top-level parser, with the arguments of the command ``chosen`` only (its module imported)."""
    from stepline import __version__
    parser = argparse.ArgumentParser(prog="stepline", description=__doc__)
    parser.add_argument("--version", action="version", version=f"stepline {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{" + ",".join(_COMMANDS) + "}")
    commands = {}
    for name, (module_name, help_text) in _COMMANDS.items():
        commands[name] = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            importlib.import_module(module_name).add_arguments(commands[name])
    return parser, commands


def _unknown_command(parser: argparse.ArgumentParser, name: str) -> int:
    close = difflib.get_close_matches(name, _COMMANDS, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; the commands are {', '.join(_COMMANDS)}"
    parser.print_usage(sys.stderr)
    print(f"stepline: error: unknown command {name!r}{hint}", file=sys.stderr)
    return 2


def _run(args) -> int:
    """The command's own status; a dump, save or file error it let through is one line and status 2.
    Warnings are one line each too (``stepline CMD: warning: …``, not the source line that warned)."""
    import warnings

    from stepline.saving.errors import SaveError, StepLoadError

    def show_warning(message, category, filename, lineno, file=None, line=None):
        print(f"stepline {args.command}: {category.__name__}: {message}", file=sys.stderr)

    try:
        with warnings.catch_warnings():
            warnings.showwarning = show_warning
            return importlib.import_module(_COMMANDS[args.command][0]).run(args)
    except (StepLoadError, SaveError) as error:
        print(f"stepline {args.command}: {error}", file=sys.stderr)
    except OSError as error:
        print(f"stepline {args.command}: {describe_os_error(error)}", file=sys.stderr)
    return 2


def describe_os_error(error: OSError) -> str:
    """``PATH: reason`` in plain words for an ``OSError`` (no ``[Errno N]``)."""
    reason = (error.strerror or str(error)).lower()
    return f"{error.filename}: {reason}" if error.filename is not None else reason


if __name__ == "__main__":
    sys.exit(main())
