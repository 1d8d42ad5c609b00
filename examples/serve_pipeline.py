"""Serve a saved pipeline over HTTP, call it three ways, save a new version and watch it swap in.

Fits StandardScaler -> LogisticRegression on breast cancer, saves the dump, starts
``stepline serve`` on a free port of 127.0.0.1, then asks it for predictions as a plain
JSON client would (``/predict``), as MLflow clients do (``/invocations`` with
``dataframe_split``) and as KServe/Triton clients do (``/v2/models/NAME/infer``). Then it
saves a new dump at the same path and waits for the server to report the new version,
and stops the server with SIGTERM (the pipeline's teardown runs). Run:
``python examples/serve_pipeline.py`` (needs ``pip install 'stepline[sklearn,serve]'`` and httpx).
"""
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from stepline import CX, Pipeline
from stepline.steps.sklearn import SKLearnWrapper


def fitted_pipeline(C):
    X, y = load_breast_cancer(return_X_y=True)
    pipeline = Pipeline([SKLearnWrapper(StandardScaler()), SKLearnWrapper(LogisticRegression(C=C, max_iter=2000))])
    return pipeline.set_name("cancer").fit(X, y)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(condition, what, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.1)


def ready(url):
    try:
        return httpx.get(url + "/v2/health/ready", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def main():
    X, _ = load_breast_cancer(return_X_y=True)
    workdir = Path(tempfile.mkdtemp(prefix="stepline-serve-example-"))
    server = None
    try:
        fitted_pipeline(C=1.0).save(CX(workdir), full_dump=True)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        command = [sys.executable, "-m", "stepline", "serve", str(workdir / "cancer"), "--port", str(port),
                   "--poll-interval", "0.2", "--log-level", "warning"]
        print("$", " ".join(command[1:]))
        server = subprocess.Popen(command, env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
        wait_until(lambda: ready(url), "the server to be ready")

        rows = X[:3].tolist()
        print("POST /predict               ->", httpx.post(url + "/predict", json={"inputs": rows}).json())
        split = {"dataframe_split": {"columns": [f"x{i}" for i in range(30)], "data": rows}}
        print("POST /invocations           ->", httpx.post(url + "/invocations", json=split).json())
        tensor = {"inputs": [{"name": "input", "shape": [3, 30], "datatype": "FP64",
                              "data": [v for row in rows for v in row]}], "outputs": [{"name": "probabilities"}]}
        answer = httpx.post(url + "/v2/models/cancer/infer", json=tensor).json()
        print("POST /v2/models/cancer/infer -> probabilities",
              [f"{p:.3g}" for p in answer["outputs"][0]["data"]], "from version", answer["model_version"][:12])

        first = answer["model_version"]
        fitted_pipeline(C=0.001).save(CX(workdir), full_dump=True)  # a new version at the same path
        wait_until(lambda: httpx.get(url + "/v2/models/cancer").json()["versions"][0] != first, "the reload")
        print("after saving a new dump, the server serves version",
              httpx.get(url + "/v2/models/cancer").json()["versions"][0][:12])
        print("POST /predict               ->", httpx.post(url + "/predict", json={"inputs": rows}).json())
    finally:
        if server is not None:
            server.send_signal(signal.SIGTERM)  # graceful: in-flight requests finish, teardown runs
            server.wait(30)
        shutil.rmtree(workdir, ignore_errors=True)
    print("server stopped")


if __name__ == "__main__":
    main()
