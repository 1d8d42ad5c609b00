"""``stepline serve PATH``: serve a dump over HTTP with uvicorn (see docs/serving.md).

One process per ``--workers``; each loads the dump, runs setup before it reports ready,
reloads when a new dump is saved at PATH, and tears the pipeline down on SIGTERM/SIGINT
after the requests in flight have been answered.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys

OPTIONS_VARIABLE = "STEPLINE_SERVE_OPTIONS"
#: The GIL switch interval ``stepline serve`` sets in its workers; 0 leaves Python's (5 ms).
#: Measured with 8 connections, 1 and 100 rows: 0.5 and 1 ms changed neither throughput nor
#: p99 beyond the noise (docs/serving.md), so the default leaves the interpreter alone.
DEFAULT_SWITCH_INTERVAL_MS = 0.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", metavar="PATH", help="the dump folder to serve (the folder a save wrote)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port to listen on (default: 8080)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes, each with its own copy (default: 1)")
    parser.add_argument("--model-name", default=None, help="the model's name in /v2/models/NAME (default: the folder's name)")
    parser.add_argument("--max-batch-size", type=int, default=None,
                        help="turn on dynamic batching: stack concurrent requests into one predict of up to N rows")
    parser.add_argument("--max-latency-ms", type=float, default=5.0,
                        help="with batching, how long the first request of a batch waits for others (default: 5)")
    parser.add_argument("--max-body-size", type=int, default=64 * 1024 * 1024,
                        help="largest request body in bytes; larger ones get 413 (default: 64 MiB)")
    parser.add_argument("--threads", type=int, default=None,
                        help="prediction threads per worker; more than 1 only helps a pipeline whose predict "
                             "releases the GIL (default: 1)")
    parser.add_argument("--switch-interval-ms", type=float, default=DEFAULT_SWITCH_INTERVAL_MS,
                        help="how long a thread may hold the GIL while another waits for it (sys.setswitchinterval); "
                             "0 leaves Python's 5 ms (default: 0)")
    parser.add_argument("--pin-cpus", action="store_true",
                        help="pin each worker (its event loop and prediction threads) to a CPU of its own: cheaper "
                             "hand-offs for a pipeline that holds the GIL; not for one that uses several CPUs itself")
    parser.add_argument("--poll-interval", type=float, default=1.0,
                        help="seconds between checks for a new dump at PATH; 0 turns hot reload off (default: 1)")
    parser.add_argument("--timeout-s", type=float, default=60.0,
                        help="seconds a client has to send a request's headers, then its body (408 beyond), and a "
                             "prediction has to finish (504 beyond; a stuck prediction thread is replaced); "
                             "0: no bound (default: 60)")
    parser.add_argument("--trust", action="store_true",
                        help="load the dump even if no trusted key signed it (its code will run)")
    parser.add_argument("--loop", default="auto", choices=["auto", "asyncio", "uvloop"],
                        help="uvicorn's event loop; auto: uvloop when installed (default: auto)")
    parser.add_argument("--http", default="auto", choices=["auto", "h11", "httptools"],
                        help="uvicorn's HTTP parser; auto: httptools when installed (default: auto)")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])


def _options(args) -> dict:
    return {"path": os.path.abspath(args.path), "model_name": args.model_name, "trusted": args.trust,
            "max_batch_size": args.max_batch_size, "max_latency_ms": args.max_latency_ms,
            "max_body_size": args.max_body_size, "threads": args.threads, "poll_interval": args.poll_interval,
            "timeout_s": args.timeout_s,
            "log_level": args.log_level, "switch_interval_ms": args.switch_interval_ms, "pin_cpus": args.pin_cpus}


def app_from_environment():
    """The app described by ``$STEPLINE_SERVE_OPTIONS`` (how uvicorn's worker processes build it)."""
    from stepline.serving.asgi import app
    options = json.loads(os.environ[OPTIONS_VARIABLE])
    _configure_logging(options.pop("log_level", "info"))  # worker processes start with no handlers
    switch_interval_ms = options.pop("switch_interval_ms", None)
    if switch_interval_ms:  # this process is the server's own: not done for users mounting the app
        sys.setswitchinterval(switch_interval_ms / 1000.0)
    if options.pop("pin_cpus", False):  # before the app starts its prediction threads, which inherit it
        from stepline.serving.placement import claim_cpu
        claim_cpu()
    return app(options.pop("path"), **options)


def _configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(levelname)s:     %(name)s: %(message)s")


def _check(args) -> str | None:
    """A one-line reason not to start, or None."""
    from stepline.saving.errors import StepLoadError
    from stepline.saving.manifest import read_manifest
    try:  # the root manifest, as a load reads it: a broken dump is refused before a server starts
        read_manifest(args.path)
    except StepLoadError as error:
        return f"{error}; give the folder a save wrote"
    if not args.trust:
        problem = _untrusted(args.path)
        if problem:
            return problem
    if not 0 <= args.port <= 65535:
        return f"--port: must be 0 (any free port) to 65535, got {args.port}"
    if args.workers < 1:
        return f"--workers: must be at least 1, got {args.workers}"
    if args.max_batch_size is not None and args.max_batch_size < 1:
        return f"--max-batch-size: must be at least 1, got {args.max_batch_size}"
    if args.max_latency_ms < 0 or args.poll_interval < 0 or args.timeout_s < 0:
        return "--max-latency-ms, --poll-interval and --timeout-s must be 0 or more"
    if args.threads is not None and args.threads < 1:
        return f"--threads: must be at least 1, got {args.threads}"
    if args.pin_cpus and not hasattr(os, "sched_setaffinity"):
        return "--pin-cpus: this system cannot pin a process to a CPU (Linux only)"
    if args.switch_interval_ms < 0:
        return f"--switch-interval-ms: must be 0 (leave Python's) or more, got {args.switch_interval_ms}"
    return None


def _exit_cleanly(signum, frame):
    """SIGTERM outside uvicorn's own handler: before it serves, or re-raised by it once it has shut
    down gracefully (requests answered, teardown run): exit with status 0, as a process manager expects."""
    raise SystemExit(0)


def _untrusted(path) -> str | None:
    """Why the dump would be refused untrusted, decided as a load does (nothing unpickled), or None."""
    from stepline.saving.errors import StepLoadError
    from stepline.trust.gate import check_untrusted, decide
    try:
        verdict = decide(path)
        if not verdict.trusted:
            check_untrusted(path, verdict)
    except StepLoadError as error:  # UntrustedDumpError, or a file that fails its digest
        return f"{type(error).__name__}: {error}\n(or serve it anyway with --trust)"
    return None


def run(args) -> int:
    problem = _check(args)
    if problem:
        print(f"stepline serve: {problem}", file=sys.stderr)
        return 2
    try:
        import uvicorn
    except ImportError:
        print("stepline serve needs Starlette and uvicorn: pip install 'stepline[serve]'", file=sys.stderr)
        return 2
    from stepline.serving.connections import protocol_class
    _configure_logging(args.log_level)
    signal.signal(signal.SIGTERM, _exit_cleanly)
    os.environ[OPTIONS_VARIABLE] = json.dumps(_options(args))
    uvicorn.run("stepline.serving.serve_cli:app_from_environment", factory=True, host=args.host,
                port=args.port, workers=args.workers, loop=args.loop, http=protocol_class(args.http),
                log_level=args.log_level, access_log=False,
                timeout_graceful_shutdown=30)
    return 0
