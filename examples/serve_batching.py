"""Dynamic batching: many one-row requests at once, answered by a few stacked ``predict`` calls.

Fits StandardScaler -> LogisticRegression on breast cancer, saves the dump, starts
``stepline serve PATH --max-batch-size 64 --max-latency-ms 2`` on a free port of
127.0.0.1, sends 64 one-row ``/predict`` requests from 16 threads at once, checks every
answer against the pipeline's own ``predict``, and reads from ``/metrics`` how many
batches the server ran and how many rows they held. Run:
``python examples/serve_batching.py`` (needs ``pip install 'stepline[sklearn,serve]'`` and httpx).
"""
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from stepline import CX, Pipeline
from stepline.steps.sklearn import SKLearnWrapper


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/v2/health/ready", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit("timed out waiting for the server to be ready")


def metric(text, name):
    """The value of one unlabelled sample line of the Prometheus text."""
    return next(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + "{}"))


def main():
    X, y = load_breast_cancer(return_X_y=True)
    workdir = Path(tempfile.mkdtemp(prefix="stepline-batching-example-"))
    server = None
    try:
        pipeline = Pipeline([SKLearnWrapper(StandardScaler()), SKLearnWrapper(LogisticRegression(max_iter=2000))])
        pipeline.set_name("cancer").fit(X, y).save(CX(workdir), full_dump=True)
        expected = pipeline.predict(X[:64]).tolist()
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        command = [sys.executable, "-m", "stepline", "serve", str(workdir / "cancer"), "--port", str(port),
                   "--max-batch-size", "64", "--max-latency-ms", "2", "--poll-interval", "0", "--log-level", "warning"]
        print("$", " ".join(command[1:]))
        server = subprocess.Popen(command, env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
        wait_ready(url)

        with httpx.Client(base_url=url) as client, ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(lambda i: client.post("/predict", json={"inputs": [X[i].tolist()]}).json(),
                                    range(64)))
            metrics = client.get("/metrics").text
        predictions = [answer["predictions"][0] for answer in answers]
        assert predictions == expected, "a batched answer differs from the pipeline's own predict"
        batches, rows = metric(metrics, "stepline_batch_rows_count"), metric(metrics, "stepline_batch_rows_sum")
        print(f"64 one-row requests from 16 threads: every answer equals pipeline.predict; "
              f"{int(rows)} rows in {int(batches)} batches ({rows / batches:.1f} rows a batch)")
    finally:
        if server is not None:
            server.send_signal(signal.SIGTERM)
            server.wait(30)
        shutil.rmtree(workdir, ignore_errors=True)
    print("server stopped")


if __name__ == "__main__":
    main()
