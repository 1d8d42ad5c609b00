"""Pipelines, steps and a real ``stepline serve`` process for the serving tests.

Importable by the server subprocess (the tests put this folder on its PYTHONPATH), so the
steps defined here are saved by reference and load there.
"""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from stepline import CX, BaseStep, Pipeline

SRC = Path(__file__).resolve().parent.parent / "src"
TESTS = Path(__file__).resolve().parent


# ------------------------------------------------------------------ pipelines
def breast_cancer():
    from sklearn.datasets import load_breast_cancer
    return load_breast_cancer(return_X_y=True)


def sklearn_pipeline(C=1.0, name="bc"):
    """StandardScaler -> LogisticRegression on breast cancer, fitted."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from stepline.steps.sklearn import SKLearnWrapper
    X, y = breast_cancer()
    pipeline = Pipeline([SKLearnWrapper(StandardScaler()), SKLearnWrapper(LogisticRegression(C=C, max_iter=2000))])
    return pipeline.set_name(name).fit(X, y)


def people_frame(n=200, seed=0):
    """A DataFrame with a string column (``city``) and two numeric ones, and a label."""
    import pandas as pd
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"city": rng.choice(["paris", "lyon", "nice"], n), "age": rng.integers(18, 80, n),
                          "income": rng.normal(3000, 800, n).round(2)})
    label = ((frame.city == "paris") ^ (frame.age > 50)).astype(int).to_numpy()
    return frame, label


def dataframe_pipeline(name="people"):
    """ColumnTransformer (one-hot city, scaled numbers) -> LogisticRegression, fitted on a DataFrame."""
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    from stepline.steps.sklearn import SKLearnWrapper
    frame, label = people_frame()
    columns = ColumnTransformer([("city", OneHotEncoder(handle_unknown="ignore"), ["city"]),
                                 ("numbers", StandardScaler(), ["age", "income"])])
    pipeline = Pipeline([SKLearnWrapper(columns, name="columns"), SKLearnWrapper(LogisticRegression())])
    return pipeline.set_name(name).fit(frame, label)


def torch_pipeline(name="net"):
    """StandardScaler -> a small TorchStep MLP (FP32 outputs), fitted."""
    from sklearn.preprocessing import StandardScaler

    from stepline.steps.sklearn import SKLearnWrapper
    from stepline.torch import TorchStep
    rng = np.random.default_rng(0)
    X = rng.normal(size=(128, 4)).astype(np.float32)
    y = (X @ np.array([1.0, -2.0, 0.5, 0.0], dtype=np.float32))[:, None]
    mlp = TorchStep(TinyNet, module_kwargs={"in_features": 4},
                    hyperparams={"epochs": 3, "batch_size": 32, "seed": 0, "device": "cpu"}, name="mlp")
    return Pipeline([SKLearnWrapper(StandardScaler()), mlp]).set_name(name).fit(X, y), X


try:  # torch is optional: the torch tests skip without it
    from torch import nn
except ImportError:  # pragma: no cover
    nn = None

if nn is not None:
    class TinyNet(nn.Module):
        def __init__(self, in_features=4):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(in_features, 8), nn.ReLU(), nn.Linear(8, 1))

        def forward(self, x):
            return self.net(x)


class TeardownMarker(BaseStep):
    """Passes data through; ``teardown`` appends a line to the file named by its hyperparameter."""

    def __init__(self, marker="", name=None):
        super().__init__(hyperparams={"marker": marker}, name=name)

    def setup(self, context=None):
        self.ready_ = True
        return self

    def transform(self, data_inputs):
        return data_inputs

    def teardown(self):
        if self.hyperparams["marker"]:
            with open(self.hyperparams["marker"], "a") as f:
                f.write(f"teardown {os.getpid()}\n")
        return self


def save(pipeline, root) -> Path:
    """Full-dump ``pipeline`` under ``root``; returns its folder."""
    pipeline.save(CX(root), full_dump=True)
    return Path(root) / pipeline.name


# ------------------------------------------------------------------ a real server
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), str(TESTS), env.get("PYTHONPATH", "")])
    return env


class Server:
    """``python -m stepline serve PATH`` on 127.0.0.1 on a free port; ``url``, ``stop()``, ``log``."""

    def __init__(self, path, *options, log_file=None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(log_file or Path(path).parent / f"server-{self.port}.log")
        self._log = open(self.log_path, "w")
        command = [sys.executable, "-m", "stepline", "serve", str(path), "--port", str(self.port), *options]
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT, env=server_env())

    def wait_ready(self, timeout=60.0) -> "Server":
        """Poll /v2/health/ready until it answers 200 (or the process dies, or the deadline passes)."""
        import httpx
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}:\n{self.log}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/v2/health/ready", timeout=1.0).status_code == 200:
                    return self
            time.sleep(0.05)  # polling a condition with a deadline, not a synchronisation
        raise RuntimeError(f"the server was not ready within {timeout} s:\n{self.log}")

    @property
    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text()

    def stop(self, sig=signal.SIGTERM, timeout=30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode

    def __enter__(self):
        return self.wait_ready()

    def __exit__(self, *exc):
        self.stop()


# ------------------------------------------------------------------ the app in-process
class InProcess:
    """The ASGI app on an event loop in a background thread, its lifespan entered, called via httpx.

    ``get``/``post``/``request`` are synchronous and may be called from many threads at once
    (they run concurrently on the app's loop), as a real server's clients would.
    """

    def __init__(self, application):
        import asyncio
        import threading
        self.app = application
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self):
        import httpx
        self._thread.start()
        self._lifespan = self.app.router.lifespan_context(self.app)
        try:
            self._call(self._lifespan.__aenter__())
        except BaseException:
            self._stop_loop()
            raise
        self._client = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://app")
        return self

    def __exit__(self, *exc):
        self._call(self._client.aclose())
        self._call(self._lifespan.__aexit__(None, None, None))
        self._stop_loop()

    def _stop_loop(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()

    def _call(self, coroutine):
        import asyncio
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=120)

    def request(self, method, path, **kwargs):
        return self._call(self._client.request(method, path, **kwargs))

    def get(self, path, **kwargs):
        return self.request("GET", path, **kwargs)

    def post(self, path, **kwargs):
        return self.request("POST", path, **kwargs)


class SlowStep(BaseStep):
    """Passes data through after ``delay`` seconds, first touching the file ``started`` (a request in flight)."""

    def __init__(self, started="", delay=0.0, name=None):
        super().__init__(hyperparams={"started": started, "delay": delay}, name=name)

    def transform(self, data_inputs):
        if self.hyperparams["started"]:
            Path(self.hyperparams["started"]).touch()
        time.sleep(self.hyperparams["delay"])  # the work of a slow model, not a synchronisation
        return data_inputs


class SetupCounter(BaseStep):
    """Passes data through; ``setup`` and ``teardown`` each append a line to the file ``log``."""

    def __init__(self, log="", name=None):
        super().__init__(hyperparams={"log": log}, name=name)

    def _note(self, event):
        with open(self.hyperparams["log"], "a") as f:
            f.write(f"{event} {os.getpid()}\n")

    def setup(self, context=None):
        self._note("setup")
        return self

    def transform(self, data_inputs):
        return data_inputs

    def teardown(self):
        self._note("teardown")
        return self


def with_steps(pipeline, *steps):
    """``pipeline``'s steps followed by ``steps`` ((name, step) pairs), same name."""
    return Pipeline([*steps, *pipeline.items()]).set_name(pipeline.name)


class DayStep(BaseStep):
    """Predicts a date (datetime64) per row: outputs the protocol has no datatype for."""

    def transform(self, data_inputs):
        return np.datetime64("2026-01-01") + np.asarray(data_inputs)[:, 0].astype("timedelta64[D]")


class FailingSetup(BaseStep):
    """A step whose ``setup`` raises (a model file it needs is missing, a GPU that is not there)."""

    def setup(self, context=None):
        raise RuntimeError("no GPU here")

    def transform(self, data_inputs):
        return data_inputs


class ThreadRecorder(BaseStep):
    """Passes data through; each ``transform`` appends its thread's ident and name to the file ``log``."""

    def __init__(self, log="", name=None):
        super().__init__(hyperparams={"log": log}, name=name)

    def transform(self, data_inputs):
        import threading
        with open(self.hyperparams["log"], "a") as f:
            f.write(f"{threading.get_ident()} {threading.current_thread().name}\n")
        return data_inputs
