"""``stepline serve`` against a bare Starlette app calling the same pipeline's ``predict``, in one run.

StandardScaler → LogisticRegression on breast cancer (30 features), saved once. Servers,
each one uvicorn worker on 127.0.0.1, each started as its own process:

- ``bare``: a Starlette app whose ``/predict`` parses ``{"inputs": rows}``, calls
  ``pipeline.predict`` on the event loop and returns JSON (the floor of the Python HTTP stack);
- ``bare+thread``: the same, with ``predict`` handed to Starlette's ``run_in_threadpool``;
- ``stepline``: ``stepline serve PATH`` (predictions on its thread pool, off the event loop);
- ``stepline+batch``: ``stepline serve PATH --max-batch-size 64 --max-latency-ms 2``;
- MLflow's scoring server, when ``mlflow`` is installed (skipped otherwise).

The load generator is a small asyncio HTTP/1.1 client (keep-alive, one request at a time
per connection, ``--connections`` connections), much cheaper per request than httpx; its
CPU time per request is printed next to the server's so that a client-bound figure shows.
For 1-row and 100-row bodies, each server gets ``--rounds`` rounds of ``--seconds``,
interleaved across servers (A B C A B C …, so drift hits all alike); the tables print
medians (throughput, p50, p99), ratios to ``bare`` and the spread of the per-round ratios
(each round's figure over ``bare``'s in the same round, min–max).

``--pin both`` (the default) measures every round twice: **pinned** — every thread of the
server process on CPU 0, the load generator on CPU 1, the same for every server — and
**unpinned** (the scheduler's choice). On a 2-core machine unpinned server and client steal
each other's core, and a server whose prediction thread needs a core gets it only when
the client is not using it; pinned, each has its own (other jobs on the machine still
share both). ``--pin on``/``off`` measure one of the two; ``--pin split`` puts a server's event loop
(its main thread) on one CPU and its other threads on the other: what a hop across CPUs costs.

Targets (issue 16): stepline ≥ 0.9× bare throughput and p99 ≤ 1.2× without batching; with
batching, 1-row throughput ≥ 1.5× bare.

    python benchmarks/bench_serving.py [--seconds 1.5] [--rounds 7] [--connections 8] [--servers bare,stepline,...]
                                       [--pin both|on|off|split] [--before OLD_SRC]
                                       [--loop auto|asyncio|uvloop] [--http auto|h11|httptools]
    python benchmarks/bench_serving.py --asgi [--rounds 7] [--requests 4000]   # the apps' own CPU, no HTTP
"""
from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
SERVERS = ("bare", "bare+thread", "stepline", "stepline+batch")

BARE_APP = r'''
import sys, json
import numpy as np
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response
from starlette.routing import Route
from stepline import CX

folder, threaded = sys.argv[1], sys.argv[2] == "1"
pipeline = CX(folder.rsplit("/", 1)[0]).load(folder.rsplit("/", 1)[1])
pipeline.setup()

async def predict(request):
    rows = np.asarray(json.loads(await request.body())["inputs"])
    outputs = await run_in_threadpool(pipeline.predict, rows) if threaded else pipeline.predict(rows)
    return Response(json.dumps({"predictions": outputs.tolist()}), media_type="application/json")

app = Starlette(routes=[Route("/predict", predict, methods=["POST"]),
                        Route("/ping", lambda r: Response("ok"), methods=["GET"])])
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(label: str, folder: Path, workdir: Path, stack=("auto", "auto"), before: str | None = None):
    """Start one server process; returns ``(process, port, ping path)``.

    A label ending in `` (before)`` runs ``stepline serve`` from the source tree ``before``.
    """
    port = free_port()
    source = before if label.endswith(" (before)") else str(SRC)
    label = label.removesuffix(" (before)")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([source, os.environ.get("PYTHONPATH", "")]))
    if label.startswith("bare"):
        (workdir / "bare_app.py").write_text(BARE_APP)
        code = (f"import sys; sys.argv=['x', {str(folder)!r}, {'1' if label == 'bare+thread' else '0'!r}]; "
                f"sys.path.insert(0, {str(workdir)!r}); import uvicorn, bare_app; "
                f"uvicorn.run(bare_app.app, host='127.0.0.1', port={port}, log_level='warning', access_log=False, "
                f"loop={stack[0]!r}, http={stack[1]!r})")
        command, ping = [sys.executable, "-c", code], "/ping"
    elif label.startswith("stepline"):
        name, *extra = label.split()  # "stepline --threads 1": a variant with extra options
        batch = ["--max-batch-size", "64", "--max-latency-ms", "2"] if name == "stepline+batch" else []
        command = [sys.executable, "-m", "stepline", "serve", str(folder), "--port", str(port),
                   "--log-level", "warning", "--poll-interval", "0", "--loop", stack[0], "--http", stack[1],
                   *batch, *extra]
        ping = "/v2/health/ready"
    else:  # mlflow
        command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", str(workdir / "mlflow_model"),
                   "-p", str(port), "--env-manager", "local", "-w", "1"]
        ping = "/ping"
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return process, port, ping


async def wait_ready(port: int, ping: str, process, timeout=120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server on port {port} exited with {process.returncode}")
        try:
            status, _ = await one_request(port, f"GET {ping} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            if status == 200:
                return
        except OSError:
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError(f"server on port {port} not ready in {timeout} s")


async def one_request(port: int, raw: bytes):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        return await read_response(reader)
    finally:
        writer.close()


async def read_response(reader):
    """Status and body of one HTTP/1.1 response (Content-Length framing, as uvicorn sends)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    body = await reader.readexactly(length) if length else b""
    return status, body


async def load(port: int, path: str, body: bytes, connections: int, seconds: float):
    """``connections`` keep-alive connections, each sending requests back to back for ``seconds``."""
    raw = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
           f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    latencies, errors = [], 0
    stop_at = time.perf_counter() + seconds

    async def connection():
        nonlocal errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while time.perf_counter() < stop_at:
                started = time.perf_counter()
                writer.write(raw)
                status, _ = await read_response(reader)
                latencies.append(time.perf_counter() - started)
                errors += status != 200
        finally:
            writer.close()

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(connections)))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"rps": len(latencies) / wall, "p50": percentile(latencies, 50), "p99": percentile(latencies, 99),
            "errors": errors, "client_cpu_per_req": cpu / max(1, len(latencies)), "requests": len(latencies)}


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q / 100))] if ordered else float("nan")


def server_cpu(pid: int) -> float:
    try:
        import psutil
        times = psutil.Process(pid).cpu_times()
        return times.user + times.system
    except Exception:
        return float("nan")


def cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0))


def pin(pid: int, cores, other_threads=None) -> None:
    """Set the CPU affinity of every thread of process ``pid`` (and of its children) to ``cores``.

    With ``other_threads``, only the main threads go on ``cores``, the other threads on ``other_threads``.
    """
    pids = [pid]
    try:
        import psutil
        pids += [child.pid for child in psutil.Process(pid).children(recursive=True)]
    except Exception:
        pass
    for process in pids:
        try:
            threads = [int(t) for t in os.listdir(f"/proc/{process}/task")]
        except OSError:
            threads = [process]
        for thread in threads:
            try:
                os.sched_setaffinity(thread, cores if other_threads is None or thread == process else other_threads)
            except OSError:  # a thread that just ended
                pass


def placements(mode: str) -> list[tuple[str, set | None, set | None]]:
    """``(name, server cores, client cores)`` for each placement measured; None: every core."""
    available = cpus()
    pinned = ("pinned", {available[0]}, {available[-1]})
    unpinned = ("unpinned", set(available), set(available))
    if len(available) < 2:
        return [unpinned]
    # split: the event loop (main thread) on one CPU, the server's other threads on the other
    split = ("split", ({available[0]}, {available[-1]}), set(available))
    return {"on": [pinned], "off": [unpinned], "both": [pinned, unpinned], "split": [split]}[mode]


def uvicorn_stack(loop: str, http: str) -> tuple[str, str]:
    """``(loop, http)`` with uvicorn's ``auto`` resolved as it resolves it: uvloop and httptools when installed."""
    if loop == "auto":
        loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    if http == "auto":
        http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    return loop, http


def wide_mlp(in_features: int, hidden: int):
    """An MLP big enough that a 100-row predict runs PyTorch's intra-op threads (saved by value)."""
    from torch import nn
    return nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, 1))


def make_dump(workdir: Path, model: str = "sklearn") -> Path:
    """The served dump: ``sklearn`` (StandardScaler → LogisticRegression) or ``torch``
    (StandardScaler → a 30→512→512→1 TorchStep MLP), on breast cancer."""
    if model == "torch":
        return make_torch_dump(workdir)
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from stepline import CX, Pipeline
    from stepline.steps.sklearn import SKLearnWrapper
    X, y = load_breast_cancer(return_X_y=True)
    pipeline = Pipeline([SKLearnWrapper(StandardScaler()), SKLearnWrapper(LogisticRegression(max_iter=2000))])
    pipeline.set_name("bc").fit(X, y).save(CX(workdir), full_dump=True)
    return workdir / "bc"


def make_torch_dump(workdir: Path) -> Path:
    import numpy as np
    from sklearn.datasets import load_breast_cancer
    from sklearn.preprocessing import StandardScaler

    from stepline import CX, Pipeline
    from stepline.steps.sklearn import SKLearnWrapper
    from stepline.torch import TorchStep
    X, y = load_breast_cancer(return_X_y=True)
    mlp = TorchStep(wide_mlp, module_kwargs={"in_features": X.shape[1], "hidden": 512},
                    hyperparams={"epochs": 1, "batch_size": 128, "seed": 0, "device": "cpu"}, name="mlp")
    pipeline = Pipeline([SKLearnWrapper(StandardScaler()), mlp]).set_name("bc")
    pipeline.fit(X.astype(np.float32), y.astype(np.float32)[:, None]).save(CX(workdir), full_dump=True)
    return workdir / "bc"


def save_mlflow_model(target: Path) -> None:
    """The same scaler and classifier as a scikit-learn Pipeline, saved in MLflow's format."""
    import mlflow.sklearn
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    X, y = load_breast_cancer(return_X_y=True)
    mlflow.sklearn.save_model(make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(X, y), str(target))


async def main_async(args) -> None:
    from sklearn.datasets import load_breast_cancer
    X, _ = load_breast_cancer(return_X_y=True)
    workdir = Path(tempfile.mkdtemp(prefix="stepline-bench-serving-"))
    labels = ["bare", *[s for s in args.servers.split(",") if s != "bare"]]
    servers = {}
    cpus_all = cpus()
    try:
        folder = make_dump(workdir, args.model)
        if args.model != "sklearn":
            print(f"model: {args.model} (MLflow's server is measured with the scikit-learn model only)")
        elif importlib.util.find_spec("mlflow") is None:
            print("MLflow is not installed: its scoring server is not measured (pip install mlflow to add it)")
        else:  # not installed on the project's machines: this branch is untested there
            save_mlflow_model(workdir / "mlflow_model")
            labels.append("mlflow")
        import uvicorn
        stack = uvicorn_stack(args.loop, args.http)
        print(f"uvicorn {uvicorn.__version__}, loop={stack[0]}, http={stack[1]} for bare and stepline alike")
        if args.before:
            labels += [f"{label} (before)" for label in labels  # (--pin-cpus is new: not in the old code)
                       if label.startswith("stepline") and "--pin-cpus" not in label]
        for label in labels:
            servers[label] = start(label, folder, workdir, stack, args.before)
        for process, port, ping in servers.values():
            await wait_ready(port, ping, process)
        modes = placements(args.pin)
        for rows in args.rows:
            body = json.dumps({"inputs": X[:rows].tolist()}).encode()
            results = {mode[0]: {label: [] for label in labels} for mode in modes}
            for _ in range(args.rounds):
                for mode, server_cores, client_cores in modes:
                    os.sched_setaffinity(0, client_cores)
                    for label in labels:
                        process, port, _ = servers[label]
                        if "--pin-cpus" not in label:  # that one pins itself, to a CPU of its own
                            pin(process.pid, *(server_cores if mode == "split" else (server_cores,)))
                        await load(port, "/predict", body, args.connections, 0.5)  # warm up
                        before = server_cpu(process.pid)
                        result = await load(port, "/predict", body, args.connections, args.seconds)
                        result["server_cpu_per_req"] = (server_cpu(process.pid) - before) / max(1, result["requests"])
                        results[mode][label].append(result)
            os.sched_setaffinity(0, set(cpus_all))
            for mode, server_cores, client_cores in modes:
                where = {"pinned": f"server on CPU {sorted(server_cores)}, client on CPU {sorted(client_cores)}",
                         "unpinned": "server and client on every CPU",
                         "split": "the server's event loop on one CPU, its other threads on the other, client anywhere",
                         }[mode]
                report(rows, results[mode], args, mlflow="mlflow" in labels, title=f"{mode} ({where})")
    finally:
        for process, _, _ in servers.values():
            process.terminate()
        for process, _, _ in servers.values():
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
        shutil.rmtree(workdir, ignore_errors=True)


def report(rows: int, results: dict, args, mlflow: bool, title: str = "") -> None:
    """One table: medians over the rounds, ratios of medians to bare, and the min–max of the per-round ratios."""
    def med(label, key):
        return statistics.median(r[key] for r in results[label])

    def spread(label, key):
        ratios = [r[key] / b[key] for r, b in zip(results[label], results["bare"])]
        return f"{min(ratios):.2f}–{max(ratios):.2f}"
    print(f"\n{rows}-row requests, {title}, {args.connections} connections, {args.rounds} rounds of "
          f"{args.seconds} s (medians; ratios to bare; per-round ratios min–max)")
    width = max(15, *map(len, results))
    print(f"  {'server':<{width}} {'req/s':>8} {'×bare':>6} {'spread':>10} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'p99 ×bare':>9} {'spread':>10} {'server µs/req':>14} {'×bare by CPU':>12} {'client µs/req':>14} "
          f"{'errors':>6}")
    base_rps, base_p99, base_cpu = med("bare", "rps"), med("bare", "p99"), med("bare", "server_cpu_per_req")
    for label in results:
        rps, p99, cpu = med(label, "rps"), med(label, "p99"), med(label, "server_cpu_per_req")
        errors = sum(r["errors"] for r in results[label])
        print(f"  {label:<{width}} {rps:8.0f} {rps / base_rps:6.2f} {spread(label, 'rps'):>10} "
              f"{med(label, 'p50') * 1e3:8.2f} {p99 * 1e3:8.2f} {p99 / base_p99:9.2f} {spread(label, 'p99'):>10} "
              f"{cpu * 1e6:14.0f} {base_cpu / cpu:12.2f} {med(label, 'client_cpu_per_req') * 1e6:14.0f} "
              f"{errors:6d}")
    print("  (×bare by CPU: bare's server CPU per request over this one's — the throughput ratio if each "
          "server had a CPU to itself; steadier than req/s while other jobs share the machine)")
    if not mlflow:
        print(f"  {'mlflow':<{width}} not installed")


# ------------------------------------------------------------------ --asgi: the apps' own cost, no HTTP
async def asgi_costs(args) -> None:
    """CPU µs per request of each app called directly through ASGI (no sockets, no uvicorn), 8 at a time.

    Steadier than the HTTP figures on a loaded machine: it counts only the apps' own work
    (routing, parsing, the hop to the prediction threads, predict, encoding) and the
    harness's, which is the same for every app.
    """
    from sklearn.datasets import load_breast_cancer

    from stepline.serving import app as serving_app
    X, _ = load_breast_cancer(return_X_y=True)
    workdir = Path(tempfile.mkdtemp(prefix="stepline-bench-serving-"))
    try:
        folder = make_dump(workdir)
        namespace = {}
        sys.argv[1:] = [str(folder), "0"]
        exec(BARE_APP, namespace)
        apps = {"bare": namespace["app"], "stepline": serving_app(folder, poll_interval=0),
                "stepline+batch": serving_app(folder, poll_interval=0, max_batch_size=64, max_latency_ms=2)}
        lifespans = [await _start_lifespan(apps[label]) for label in ("stepline", "stepline+batch")]
        print(f"\nASGI calls in-process, {args.connections} at a time, {args.requests} requests "
              f"(CPU µs per request, median of {args.rounds} rounds)")
        for rows in (1, 100):
            body = json.dumps({"inputs": X[:rows].tolist()}).encode()
            costs = {label: [] for label in apps}
            for _ in range(args.rounds):
                for label, application in apps.items():
                    costs[label].append(await _asgi_round(application, body, args.connections, args.requests))
            line = ", ".join(f"{label} {statistics.median(c):.0f}" for label, c in costs.items())
            print(f"  {rows:>3} rows: {line}")
        for inbox, outbox, task in lifespans:  # teardown, as uvicorn would at shutdown
            await inbox.put({"type": "lifespan.shutdown"})
            await outbox.get()
            await task
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


async def _start_lifespan(application):
    """Run the app's startup as a server would; ``(inbox, outbox, task)`` for its shutdown."""
    inbox, outbox = asyncio.Queue(), asyncio.Queue()
    await inbox.put({"type": "lifespan.startup"})
    task = asyncio.ensure_future(application({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}},
                                             inbox.get, outbox.put))
    message = await outbox.get()
    if message["type"] != "lifespan.startup.complete":
        raise RuntimeError(f"startup failed: {message}")
    return inbox, outbox, task


async def _asgi_round(application, body: bytes, concurrency: int, requests: int) -> float:
    headers = [(b"host", b"x"), (b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]

    async def call():
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                 "scheme": "http", "path": "/predict", "raw_path": b"/predict", "query_string": b"",
                 "root_path": "", "headers": headers, "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}
        messages = [{"type": "http.request", "body": body, "more_body": False}]
        status = []

        async def receive():
            return messages.pop() if messages else {"type": "http.disconnect"}

        async def send(message):
            if message["type"] == "http.response.start":
                status.append(message["status"])
        await application(scope, receive, send)
        if status != [200]:
            raise RuntimeError(f"status {status}")

    async def client():
        for _ in range(requests // concurrency):
            await call()

    await asyncio.gather(*(client() for _ in range(concurrency)))  # warm up
    cpu = time.process_time()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return (time.process_time() - cpu) / (requests // concurrency * concurrency) * 1e6


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.5, help="length of one measured round per server")
    parser.add_argument("--rounds", type=int, default=7, help="rounds per server (interleaved); medians printed")
    parser.add_argument("--connections", type=int, default=8, help="concurrent keep-alive connections")
    parser.add_argument("--loop", default="auto", choices=["auto", "asyncio", "uvloop"], help="uvicorn's loop, for all")
    parser.add_argument("--http", default="auto", choices=["auto", "h11", "httptools"], help="uvicorn's parser, for all")
    parser.add_argument("--servers", default=",".join(SERVERS),
                        help=f"comma-separated, from {','.join(SERVERS)}; 'stepline --threads 2' adds options "
                             "('stepline --pin-cpus' keeps the CPU it pins itself to)")
    parser.add_argument("--rows", default=[1, 100], type=lambda text: [int(n) for n in text.split(",")],
                        help="comma-separated rows per request (default: 1,100)")
    parser.add_argument("--before", default=None, metavar="SRC",
                        help="also run each stepline server from this source tree (e.g. a `git archive` of the "
                             "previous commit's src/), labelled '(before)', in the same rounds")
    parser.add_argument("--pin", default="both", choices=["both", "on", "off", "split"],
                        help="on: server on one CPU, load generator on another; both (default): each round pinned "
                             "and unpinned; split: the loop and the prediction threads on different CPUs")
    parser.add_argument("--model", default="sklearn", choices=["sklearn", "torch"],
                        help="the served pipeline: sklearn (StandardScaler → LogisticRegression, default) or torch "
                             "(StandardScaler → a 30→512→512→1 MLP whose 100-row predict runs intra-op threads)")
    parser.add_argument("--asgi", action="store_true",
                        help="instead: CPU per request of the apps called in-process through ASGI (no HTTP)")
    parser.add_argument("--requests", type=int, default=4000, help="with --asgi: requests per round")
    args = parser.parse_args(argv)
    os.environ.setdefault("STEPLINE_HOME", tempfile.mkdtemp(prefix="stepline-bench-home-"))
    sys.path.insert(0, str(SRC))
    asyncio.run(asgi_costs(args) if args.asgi else main_async(args))


if __name__ == "__main__":
    main()
