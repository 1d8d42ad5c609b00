"""A real ``stepline serve`` process on 127.0.0.1, driven by tritonclient.http and httpx."""
import json
import os
import shutil
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

pytest.importorskip("uvicorn")
pytest.importorskip("sklearn")
pytest.importorskip("pandas")
httpx = pytest.importorskip("httpx")
triton = pytest.importorskip("tritonclient.http")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

import serving_helpers as h  # noqa: E402

X, _ = h.breast_cancer()


@pytest.fixture(scope="module")
def bc_server(tmp_path_factory):
    folder = h.save(h.sklearn_pipeline(), tmp_path_factory.mktemp("bc"))
    with h.Server(folder) as server:
        yield server


def client(server):
    return triton.InferenceServerClient(server.url.removeprefix("http://"))


def triton_input(name, array, datatype, binary):
    tensor = triton.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array, binary_data=binary)
    return tensor


# ------------------------------------------------------------------ tritonclient
def test_tritonclient_health_metadata_and_infer_in_binary_and_json(bc_server):
    pipeline = h.sklearn_pipeline()
    c = client(bc_server)
    assert c.is_server_live() and c.is_server_ready() and c.is_model_ready("bc")
    metadata = c.get_model_metadata("bc")
    assert metadata["name"] == "bc" and len(metadata["versions"][0]) == 64
    assert {o["name"] for o in metadata["outputs"]} == {"predictions", "probabilities"}
    rows = X[:64]
    expected = pipeline.predict(rows)
    proba = pipeline["LogisticRegression"].wrapped_sklearn_predictor.predict_proba(pipeline["StandardScaler"].transform(rows))
    for binary in (True, False):
        outputs = [triton.InferRequestedOutput("predictions", binary_data=binary),
                   triton.InferRequestedOutput("probabilities", binary_data=binary)]
        result = c.infer("bc", [triton_input("input", rows, "FP64", binary)], outputs=outputs)
        np.testing.assert_array_equal(result.as_numpy("predictions"), expected)
        np.testing.assert_array_equal(result.as_numpy("probabilities"), proba)
    # compressed request bodies, as tritonclient sends them when asked
    for algorithm in ("gzip", "deflate"):
        result = c.infer("bc", [triton_input("input", rows, "FP64", True)], request_compression_algorithm=algorithm)
        np.testing.assert_array_equal(result.as_numpy("predictions"), expected)
    # no outputs asked: every output, in binary (tritonclient's default)
    result = c.infer("bc", [triton_input("input", rows.astype(np.float32), "FP32", True)])
    np.testing.assert_array_equal(result.as_numpy("predictions"), pipeline.predict(rows.astype(np.float32)))


def test_tritonclient_gets_a_readable_error_for_an_unknown_model_and_a_bad_tensor(bc_server):
    c = client(bc_server)
    with pytest.raises(InferenceServerException, match="unknown model 'nope'"):
        c.infer("nope", [triton_input("input", X[:1], "FP64", True)])
    with pytest.raises(InferenceServerException, match="StandardScaler"):
        c.infer("bc", [triton_input("input", X[:2, :5], "FP64", True)])
    assert not c.is_model_ready("nope")


def test_httpx_predict_matches_in_process(bc_server):
    expected = h.sklearn_pipeline().predict(X).tolist()
    response = httpx.post(bc_server.url + "/predict", json={"inputs": X.tolist()})
    assert response.status_code == 200 and response.json() == {"predictions": expected}
    response = httpx.post(bc_server.url + "/invocations",
                          json={"dataframe_split": {"data": X[:9].tolist()}})
    assert response.json() == {"predictions": expected[:9]}


def test_dataframe_pipeline_with_a_string_column(tmp_path):
    folder = h.save(h.dataframe_pipeline(), tmp_path)
    frame, _ = h.people_frame(n=40, seed=3)
    expected = h.dataframe_pipeline().predict(frame)
    with h.Server(folder) as server:
        body = {"dataframe_split": json.loads(frame.to_json(orient="split", index=False))}
        assert httpx.post(server.url + "/predict", json=body).json()["predictions"] == expected.tolist()
        inputs = [triton_input("city", frame.city.to_numpy(dtype=object), "BYTES", True),
                  triton_input("age", frame.age.to_numpy(), "INT64", True),
                  triton_input("income", frame.income.to_numpy(), "FP64", False)]
        result = client(server).infer("people", inputs, outputs=[triton.InferRequestedOutput("predictions")])
        np.testing.assert_array_equal(result.as_numpy("predictions"), expected)


def test_torch_step_pipeline(tmp_path):
    pytest.importorskip("torch")
    pipeline, rows = h.torch_pipeline()
    folder = h.save(pipeline, tmp_path)
    expected = pipeline.predict(rows)
    with h.Server(folder) as server:
        result = client(server).infer("net", [triton_input("input", rows, "FP32", True)])
        outputs = result.as_numpy("predictions")
        assert outputs.dtype == np.float32
        np.testing.assert_array_equal(outputs, expected)
        response = httpx.post(server.url + "/predict", json={"inputs": rows.tolist()})
        np.testing.assert_array_equal(np.asarray(response.json()["predictions"], dtype=np.float32),
                                      pipeline.predict(np.asarray(rows.tolist())))


# ------------------------------------------------------------------ lifecycle
def test_eight_concurrent_clients_on_a_fresh_server_then_sigterm_finishes_in_flight_and_tears_down(tmp_path):
    log, started = tmp_path / "lifecycle.log", tmp_path / "started"
    slow = h.SlowStep(delay=0.0, name="slow")
    pipeline = h.with_steps(h.sklearn_pipeline(name="m"), ("counter", h.SetupCounter(str(log))), ("slow", slow))
    folder = h.save(pipeline, tmp_path)
    expected = h.sklearn_pipeline().predict(X[:20]).tolist()
    with h.Server(folder, "--poll-interval", "0").wait_ready() as server:
        barrier = threading.Barrier(8)

        def first_request(i):
            with httpx.Client(base_url=server.url) as http:
                barrier.wait()
                return http.post("/predict", json={"inputs": X[i:i + 13].tolist()})
        with ThreadPoolExecutor(8) as pool:
            responses = list(pool.map(first_request, range(8)))
        assert [r.status_code for r in responses] == [200] * 8
        assert [r.json()["predictions"] for r in responses] == [expected[i:i + 13] for i in range(8)]
        assert log.read_text().split()[::2] == ["setup"]  # once, before the first request

    # a slow request in flight when SIGTERM arrives is still answered, then teardown runs
    slow.hyperparams.update({"started": str(started), "delay": 1.5})
    folder = h.save(pipeline, tmp_path)
    server = h.Server(folder, "--poll-interval", "0").wait_ready()
    with ThreadPoolExecutor(1) as pool:
        in_flight = pool.submit(httpx.post, server.url + "/predict", json={"inputs": X[:3].tolist()}, timeout=30)
        deadline = time.monotonic() + 30
        while not started.exists():
            assert time.monotonic() < deadline and not in_flight.done(), server.log
            time.sleep(0.01)  # polling a condition with a deadline
        server.process.send_signal(signal.SIGTERM)
        response = in_flight.result(timeout=30)
    assert server.stop() in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once it has shut down
    assert response.status_code == 200 and response.json()["predictions"] == expected[:3]
    events = [line.split()[0] for line in log.read_text().splitlines()]
    assert events[-2:] == ["setup", "teardown"]


def test_hot_reload_under_load_fails_no_request(tmp_path):
    folder = h.save(h.sklearn_pipeline(C=1.0, name="m"), tmp_path)
    old = h.sklearn_pipeline(C=1.0).predict(X).tolist()
    body = {"inputs": [{"name": "input", "shape": list(X.shape), "datatype": "FP64", "data": X.ravel().tolist()}],
            "outputs": [{"name": "predictions"}]}
    with h.Server(folder, "--poll-interval", "0.05") as server:
        with httpx.Client(base_url=server.url) as http:
            first_version = http.get("/v2/models/m").json()["versions"][0]
            failures, versions, stop = [], [], threading.Event()

            def load_loop():
                with httpx.Client(base_url=server.url) as loop_client:
                    for _ in range(3000):  # bounded
                        response = loop_client.post("/v2/models/m/infer", json=body)
                        if response.status_code != 200:
                            failures.append(response.text)
                            continue
                        payload = response.json()
                        versions.append((payload["model_version"], payload["outputs"][0]["data"]))
                        if stop.is_set():
                            return
            with ThreadPoolExecutor(4) as pool:
                loops = [pool.submit(load_loop) for _ in range(4)]
                while len(versions) < 20:
                    assert not any(f.done() for f in loops), failures
                    time.sleep(0.01)
                # changes-only save: only the refitted estimator's folder is rewritten
                pipeline = h.sklearn_pipeline(C=1.0, name="m")
                pipeline["LogisticRegression"].set_hyperparams({"C": 0.0005})
                pipeline.fit(*h.breast_cancer()).save(h.CX(tmp_path), full_dump=False)
                new = pipeline.predict(X).tolist()
                deadline = time.monotonic() + 30
                while http.get("/v2/models/m").json()["versions"][0] == first_version:
                    assert time.monotonic() < deadline, server.log
                    time.sleep(0.02)
                seen = len(versions)
                while len(versions) < seen + 20:
                    time.sleep(0.01)
                stop.set()
                for f in loops:
                    f.result()
    assert failures == []
    assert old != new
    digests = [v for v, _ in versions]
    assert digests[0] == first_version and digests[-1] != first_version
    for version, outputs in versions:  # every response is one version's outputs, never a mix
        assert outputs == (old if version == first_version else new)


def test_a_corrupted_new_dump_is_refused_while_the_old_one_keeps_serving(tmp_path):
    live_root, staging = tmp_path / "live", tmp_path / "staging"
    folder = h.save(h.sklearn_pipeline(name="m"), live_root)
    broken = h.save(h.sklearn_pipeline(C=0.01, name="m"), staging)
    # a step's own file (its manifest holds a small pickle inline): not the root's manifest or signature
    victim = max((p for p in broken.rglob("*") if p.is_file() and p.parent != broken), key=lambda p: p.stat().st_size)
    victim.write_bytes(b"\x80" + os.urandom(victim.stat().st_size - 1))
    expected = h.sklearn_pipeline().predict(X).tolist()
    with h.Server(folder, "--poll-interval", "0.05") as server:
        version = httpx.get(server.url + "/v2/models/m").json()["versions"][0]
        os.rename(folder, tmp_path / "old")  # swap the broken dump in, as a deploy script would
        os.rename(broken, folder)
        deadline = time.monotonic() + 30
        while "stepline_model_refused_total 1" not in httpx.get(server.url + "/metrics").text:
            assert time.monotonic() < deadline, server.log
            time.sleep(0.02)
        assert httpx.get(server.url + "/v2/models/m").json()["versions"] == [version]
        assert httpx.post(server.url + "/predict", json={"inputs": X.tolist()}).json()["predictions"] == expected
        assert "refused the new dump" in server.log
        shutil.rmtree(folder)
        os.rename(tmp_path / "old", folder)


def test_serve_on_asyncio_and_h11_as_well_as_on_the_default_stack(tmp_path):
    folder = h.save(h.sklearn_pipeline(), tmp_path)
    with h.Server(folder, "--loop", "asyncio", "--http", "h11", "--switch-interval-ms", "1") as server:
        response = httpx.post(server.url + "/predict", json={"inputs": X[:3].tolist()})
        assert response.json()["predictions"] == h.sklearn_pipeline().predict(X[:3]).tolist()
        outputs = client(server).infer("bc", [triton_input("input", X[:3], "FP64", True)])
        np.testing.assert_array_equal(outputs.as_numpy("predictions"), h.sklearn_pipeline().predict(X[:3]))


@pytest.mark.parametrize("options, message", [(["--threads", "0"], "--threads"),
                                              (["--switch-interval-ms", "-1"], "--switch-interval-ms")])
def test_serve_refuses_bad_options_naming_them(tmp_path, options, message):
    folder = h.save(h.sklearn_pipeline(), tmp_path)
    server = h.Server(folder, *options)
    assert server.process.wait(30) == 2
    assert message in server.log


def test_serve_refuses_a_folder_that_is_not_a_dump(tmp_path):
    server = h.Server(tmp_path)
    assert server.process.wait(30) == 2
    assert "not a stepline dump" in server.log


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.binary(max_size=300) | st.recursive(st.none() | st.floats() | st.text(max_size=4) | st.integers(),
                                                   lambda s: st.lists(s, max_size=3) | st.dictionaries(
                                                       st.sampled_from(["inputs", "name", "shape", "datatype",
                                                                        "data", "dataframe_split"]), s, max_size=3),
                                                   max_leaves=12).map(lambda v: json.dumps(v).encode()),
       path=st.sampled_from(["/predict", "/v2/models/bc/infer"]))
def test_garbage_bodies_never_get_a_5xx_from_the_real_server(bc_server, body, path):
    response = httpx.post(bc_server.url + path, content=body)
    assert response.status_code < 500, (body, response.text)


def test_two_workers_each_set_up_once_and_tear_down_on_sigterm(tmp_path):
    log = tmp_path / "lifecycle.log"
    folder = h.save(h.with_steps(h.sklearn_pipeline(name="m"), ("counter", h.SetupCounter(str(log)))), tmp_path)
    expected = h.sklearn_pipeline().predict(X[:5]).tolist()
    server = h.Server(folder, "--workers", "2", "--poll-interval", "0").wait_ready()
    deadline = time.monotonic() + 60
    while len(log.read_text().splitlines()) < 2:  # the second worker may still be starting
        assert time.monotonic() < deadline, server.log
        time.sleep(0.05)
    with httpx.Client(base_url=server.url) as http:
        assert all(http.post("/predict", json={"inputs": X[:5].tolist()}).json()["predictions"] == expected
                   for _ in range(10))
    server.stop()
    events = sorted(line.split()[0] for line in log.read_text().splitlines())
    assert events == ["setup", "setup", "teardown", "teardown"]
    assert len({line.split()[1] for line in log.read_text().splitlines()}) == 2  # two processes


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs Linux and two CPUs")
def test_pinned_workers_each_run_every_thread_on_a_cpu_of_their_own(tmp_path, monkeypatch):
    psutil = pytest.importorskip("psutil")
    monkeypatch.setenv("STEPLINE_CPU_LOCKS", str(tmp_path))  # this test's CPUs, whatever else runs here
    folder = h.save(h.sklearn_pipeline(name="m"), tmp_path)
    expected = h.sklearn_pipeline().predict(X[:5]).tolist()
    with h.Server(folder, "--workers", "2", "--pin-cpus", "--poll-interval", "0") as server:
        deadline = time.monotonic() + 60
        def workers():  # uvicorn's worker processes (not multiprocessing's resource tracker)
            return [p for p in psutil.Process(server.process.pid).children() if "spawn_main" in " ".join(p.cmdline())]
        while len(workers()) < 2 or not all(
                (tmp_path / f"stepline-serve-cpu{c}.lock").exists() for c in sorted(os.sched_getaffinity(0))[:2]):
            assert time.monotonic() < deadline, server.log
            time.sleep(0.05)  # polling a condition with a deadline, not a synchronisation
        with httpx.Client(base_url=server.url) as http:  # both have started their prediction threads
            assert all(http.post("/predict", json={"inputs": X[:5].tolist()}).json()["predictions"] == expected
                       for _ in range(20))
        placements = {}
        for worker in workers():
            cpus = {frozenset(os.sched_getaffinity(thread.id)) for thread in worker.threads()}
            assert len(cpus) == 1 and len(next(iter(cpus))) == 1, f"worker {worker.pid}'s threads on {cpus}"
            placements[worker.pid] = next(iter(cpus))
    assert len(set(placements.values())) == 2, f"two workers on the same CPU: {placements}"


def untrusted_dump(root, name="m"):
    """A dump needing a class off the allow-list (SetupCounter), its signature removed: untrusted."""
    folder = h.save(h.with_steps(h.sklearn_pipeline(name=name), ("counter", h.SetupCounter(str(root / "log")))), root)
    (folder / "stepline.sig").unlink()
    return folder


def test_an_untrusted_dump_is_refused_unless_trust_is_given(tmp_path):
    pytest.importorskip("stepline.trust")
    folder = untrusted_dump(tmp_path)
    refused = h.Server(folder)
    assert refused.process.wait(60) != 0
    assert "UntrustedDumpError" in refused.log and "SetupCounter" in refused.log, refused.log
    refused.stop()
    with h.Server(folder, "--trust") as server:
        response = httpx.post(server.url + "/predict", json={"inputs": X[:4].tolist()})
        assert response.json()["predictions"] == h.sklearn_pipeline().predict(X[:4]).tolist()
