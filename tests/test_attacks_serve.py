"""Hostile clients and careless operators against ``stepline serve``.

Slow and broken clients on raw sockets against a real server, protocol edge cases and
misbehaving pipelines on the app in-process, signals and reloads against a real server.
``stepline predict``'s own attacks are in test_attacks_predict.py.
"""
import json
import os
import shutil
import signal
import socket
import threading
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("sklearn")
pd = pytest.importorskip("pandas")
httpx = pytest.importorskip("httpx")

import attack_steps as bad  # noqa: E402
from attack_steps import two_feature_pipeline  # noqa: E402
import serving_helpers as h  # noqa: E402
from stepline import Pipeline  # noqa: E402
from stepline.serving import app as serving_app  # noqa: E402

TIMEOUT_S = 1.5  # the servers' --timeout-s here


@pytest.fixture(scope="module")
def sentinel_server(tmp_path_factory):
    """A real server on a pipeline that hangs or runs slowly when asked (see attack_steps.Sentinel)."""
    root = tmp_path_factory.mktemp("sentinel")
    started = root / "started"
    folder = h.save(two_feature_pipeline(bad.Sentinel(str(started), name="sentinel")), root)
    server = h.Server(folder, "--poll-interval", "0", "--timeout-s", str(TIMEOUT_S))
    try:
        server.wait_ready()
        server.started = started
        yield server
    finally:
        server.stop()


def connect(server) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    return s


def read_until_closed(s: socket.socket, deadline_s: float = 10.0) -> bytes:
    """Everything the server sends until it closes the connection (or ``deadline_s`` passes: then b"...<open>")."""
    s.settimeout(deadline_s)
    out = b""
    try:
        while chunk := s.recv(65536):
            out += chunk
    except socket.timeout:
        return out + b"<still open>"
    return out


def read_response(reader) -> tuple[bytes, bytes]:
    """One response's head and body (by its Content-Length), from ``socket.makefile("rb")``."""
    lines = []
    while (line := reader.readline()) not in (b"\r\n", b""):
        lines.append(line)
    head = b"".join(lines)
    length = next(int(line.split(b":")[1]) for line in lines if line.lower().startswith(b"content-length"))
    return head, reader.read(length)


def request(path: str, body: bytes, extra: bytes = b"", length: int | None = None) -> bytes:
    length = len(body) if length is None else length
    return (b"POST %s HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n%s"
            % (path.encode(), length, extra, body))


def json_error(response: bytes) -> tuple[int, str]:
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)["error"]


ROW = json.dumps({"inputs": [[0.5, -0.5]]}).encode()


# ------------------------------------------------------------------ slow and broken clients
def test_a_body_shorter_than_its_content_length_gets_a_408_within_the_timeout(sentinel_server):
    with connect(sentinel_server) as s:
        s.sendall(request("/predict", ROW, length=len(ROW) + 100))  # then the client hangs
        started = time.monotonic()
        response = read_until_closed(s)
    status, error = json_error(response)
    assert status == 408 and "body" in error and "--timeout-s" in error, response
    assert time.monotonic() - started < TIMEOUT_S + 5


def test_headers_sent_a_byte_at_a_time_get_a_408_and_the_connection_closed(sentinel_server):
    assert_slowloris_cut_off(sentinel_server)


def assert_slowloris_cut_off(server):
    """A client sending its headers a byte at a time is answered 408 and disconnected within the timeout."""
    head = b"POST /predict HTTP/1.1\r\nHost: test\r\nX-Padding: " + b"a" * 10_000
    with connect(server) as s:
        s.setblocking(False)
        started, answer = time.monotonic(), b""
        for byte in head:  # slowloris: never finishes its headers
            assert time.monotonic() - started < TIMEOUT_S + 5, "the server kept the connection open"
            try:
                s.send(bytes([byte]))
            except OSError:  # the server closed it
                break
            try:
                chunk = s.recv(65536)
            except BlockingIOError:
                time.sleep(0.05)  # the attack's pace, not a synchronisation
                continue
            answer += chunk
            if not chunk or b"\r\n\r\n" in answer:
                break
        s.setblocking(True)
        answer += read_until_closed(s, 5)
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert "request headers" in json_error(answer)[1]


def test_the_header_deadline_holds_on_h11_and_asyncio_too(tmp_path):
    folder = h.save(two_feature_pipeline(), tmp_path)
    server = h.Server(folder, "--poll-interval", "0", "--timeout-s", str(TIMEOUT_S), "--http", "h11", "--loop", "asyncio")
    try:
        server.wait_ready()
        assert_slowloris_cut_off(server)
        assert httpx.post(server.url + "/predict", content=ROW, timeout=10).status_code == 200
    finally:
        server.stop()


def test_connections_opened_and_never_used_are_closed_while_others_are_served(sentinel_server):
    idle = [connect(sentinel_server) for _ in range(30)]
    try:
        response = httpx.post(sentinel_server.url + "/predict", content=ROW, timeout=10)
        assert response.status_code == 200, response.text
        for s in idle:  # closed by uvicorn's keep-alive timeout (5 s) or the header deadline (408)
            answer = read_until_closed(s, 15)
            assert answer == b"" or answer.startswith(b"HTTP/1.1 408"), answer
    finally:
        for s in idle:
            s.close()


def test_a_client_gone_while_its_prediction_runs_leaves_no_error_and_the_server_serves(sentinel_server):
    sentinel_server.started.unlink(missing_ok=True)
    log_before = sentinel_server.log
    with connect(sentinel_server) as s:  # gone in the middle of its body
        s.sendall(request("/predict", ROW[:10], length=len(ROW)))
    with connect(sentinel_server) as s:  # gone while its prediction runs
        s.sendall(request("/predict", json.dumps({"inputs": [[-2, 0]]}).encode()))
        deadline = time.monotonic() + 10
        while not sentinel_server.started.exists():
            assert time.monotonic() < deadline
            time.sleep(0.01)  # polling a condition with a deadline
    response = httpx.post(sentinel_server.url + "/predict", content=ROW, timeout=10)  # after the slow one
    assert response.status_code == 200, response.text
    new_lines = sentinel_server.log[len(log_before):]
    assert "ERROR" not in new_lines and "Traceback" not in new_lines, new_lines


def test_pipelined_requests_are_answered_in_order_and_expect_100_continue_is_honoured(sentinel_server):
    rows = [[[0.5, -0.5]], [[-3.0, 3.0]], [[0.1, 0.0]]]
    expected = [two_feature_pipeline().predict(np.asarray(r)).tolist() for r in rows]
    with connect(sentinel_server) as s:
        s.sendall(b"".join(request("/predict", json.dumps({"inputs": r}).encode()) for r in rows))
        reader = s.makefile("rb")
        answers = [read_response(reader) for _ in rows]
    assert [json.loads(body)["predictions"] for _, body in answers] == expected
    with connect(sentinel_server) as s:
        s.sendall(request("/predict", b"", extra=b"Expect: 100-continue\r\n", length=len(ROW)))
        s.settimeout(10)
        assert s.recv(100).startswith(b"HTTP/1.1 100 Continue")
        s.sendall(ROW)
        head, body = read_response(s.makefile("rb"))
        assert head.startswith(b"HTTP/1.1 200") and "predictions" in json.loads(body), (head, body)
    with connect(sentinel_server) as s:  # a body over the limit is refused before the client is told to send it
        s.sendall(request("/predict", b"", extra=b"Expect: 100-continue\r\n", length=1 << 40))
        head, body = read_response(s.makefile("rb"))
        assert head.startswith(b"HTTP/1.1 413") and "over the limit" in json.loads(body)["error"], (head, body)


# ------------------------------------------------------------------ a predict that hangs
@pytest.mark.parametrize("options", [[], ["--max-batch-size", "8"]], ids=["unbatched", "batched"])
def test_a_predict_that_hangs_gets_a_504_the_worker_keeps_serving_and_sigterm_still_exits(tmp_path, options):
    started = tmp_path / "started"
    folder = h.save(two_feature_pipeline(bad.Sentinel(str(started), name="sentinel")), tmp_path)
    server = h.Server(folder, "--poll-interval", "0", "--timeout-s", str(TIMEOUT_S), *options)
    try:
        server.wait_ready()
        hung = httpx.post(server.url + "/predict", json={"inputs": [[-1, 0]]}, timeout=30)
        assert hung.status_code == 504, hung.text
        assert "--timeout-s" in hung.json()["error"] and "replaced" in hung.json()["error"]
        for _ in range(3):  # the stuck thread was replaced: a 200, not another 504 behind it
            response = httpx.post(server.url + "/predict", content=ROW, timeout=30)
            assert response.status_code == 200, response.text
        assert httpx.get(server.url + "/v2/health/ready").status_code == 200
        server.process.send_signal(signal.SIGTERM)
        server.process.wait(TIMEOUT_S + 20)  # a call that never returns does not keep the server up
        assert "not tearing it down" in server.log
    finally:
        server.stop()


# ------------------------------------------------------------------ the binary tensor extension
def binary_request(tensors, extra_binary=b"", header_length=None):
    """A v2 body whose inputs ``[(tensor fields, raw bytes)]`` are sent in binary, and its headers."""
    header = json.dumps({"inputs": [{**fields, "parameters": {"binary_data_size": len(raw)}}
                                    for fields, raw in tensors]}).encode()
    body = header + b"".join(raw for _, raw in tensors) + extra_binary
    return body, {"Inference-Header-Content-Length": str(len(header) if header_length is None else header_length)}


def fp64(shape, values):
    return {"name": "input", "shape": shape, "datatype": "FP64"}, np.asarray(values, "<f8").tobytes()


def strings(name, raw):
    return {"name": name, "shape": [1], "datatype": "BYTES"}, raw


BINARY_CASES = [
    ("header length negative", *binary_request([fp64([1, 2], [0.5, 0.5])], header_length=-4),
     "Inference-Header-Content-Length"),
    ("header length not a number", *binary_request([fp64([1, 2], [0.5, 0.5])], header_length="12a"),
     "not an integer"),
    ("header length cuts the JSON", *binary_request([fp64([1, 2], [0.5, 0.5])], header_length=20), "malformed JSON"),
    ("header length past the JSON", *binary_request([fp64([1, 2], [0.5, 0.5])], header_length=90), "body"),
    ("sizes summing past the body", json.dumps({"inputs": [
        {"name": "a", "shape": [1], "datatype": "FP64", "parameters": {"binary_data_size": 8}},
        {"name": "b", "shape": [1], "datatype": "FP64", "parameters": {"binary_data_size": 8}}]}).encode() + b"\0" * 12,
     None, "binary_data_size"),
    ("bytes after the last tensor", *binary_request([fp64([1, 2], [0.5, 0.5])], extra_binary=b"\0" * 8),
     "after the last input tensor"),
    ("size not matching the shape", *binary_request([fp64([1, 3], [0.5, 0.5])]), "binary_data_size"),
    ("shape whose product overflows", *binary_request([({"name": "input", "shape": [2 ** 39, 2 ** 39],
                                                          "datatype": "FP64"}, b"\0" * 16)]), "binary_data_size"),
    ("BYTES length past the data", *binary_request([strings("input", (1000).to_bytes(4, "little") + b"ab")]),
     "past the end"),
    ("BYTES length of 4 GiB", *binary_request([strings("input", b"\xff\xff\xff\xff")]), "past the end"),
    ("BYTES prefix cut short", *binary_request([strings("input", b"\x01\x00")]), "cannot hold"),
    ("BYTES bytes after the element", *binary_request([strings("input", (1).to_bytes(4, "little") + b"abc")]),
     "after the last BYTES element"),
]


@pytest.mark.parametrize("case", BINARY_CASES, ids=[c[0] for c in BINARY_CASES])
def test_binary_tensor_data_that_does_not_add_up_gets_a_400_naming_it(two_feature_app, case):
    _, body, headers, message = case
    if headers is None:
        header = body[:body.index(b"}]}") + 3]
        headers = {"Inference-Header-Content-Length": str(len(header))}
    response = two_feature_app.post("/v2/models/m/infer", content=body, headers=headers)
    assert response.status_code == 400 and message in response.json()["error"], response.text


@pytest.fixture(scope="module")
def two_feature_app(tmp_path_factory):
    folder = h.save(two_feature_pipeline(), tmp_path_factory.mktemp("app"))
    with h.InProcess(serving_app(folder, poll_interval=0)) as client:
        yield client


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tensors=st.lists(st.tuples(
    st.sampled_from(["input", "a", "b"]), st.lists(st.integers(0, 4), max_size=3),
    st.sampled_from(["BOOL", "UINT8", "INT32", "INT64", "UINT64", "FP16", "FP32", "FP64", "BYTES"]),
    st.binary(max_size=64), st.one_of(st.none(), st.integers(-2, 80))), min_size=1, max_size=3),
    tail=st.binary(max_size=8), outputs=st.lists(st.sampled_from(["predictions", "probabilities", "x"]), max_size=3))
def test_binary_requests_of_any_shape_datatype_and_bytes_never_get_a_5xx(two_feature_app, tensors, tail, outputs):
    """Well-framed headers, arbitrary binary parts: always a 200 or a 4xx naming the field."""
    entries, raw = [], b""
    for name, shape, datatype, data, size in tensors:
        size = len(data) if size is None else size
        entries.append({"name": name, "shape": shape, "datatype": datatype, "parameters": {"binary_data_size": size}})
        raw += data
    header = json.dumps({"inputs": entries, "outputs": [{"name": n} for n in outputs]}).encode()
    response = two_feature_app.post("/v2/models/m/infer", content=header + raw + tail,
                                    headers={"Inference-Header-Content-Length": str(len(header))})
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert response.json()["error"]


# ------------------------------------------------------------------ the pipeline's own faults
@pytest.mark.parametrize("step", [bad.FewerRows, bad.DictRows, bad.RaggedRows])
@pytest.mark.parametrize("batching", [None, 8])
def test_outputs_of_the_wrong_length_or_kind_get_a_500_naming_the_last_step(tmp_path, step, batching, caplog):
    folder = h.save(Pipeline([step(name="broken")]).set_name("m"), tmp_path)
    infer = {"inputs": [{"name": "input", "shape": [3, 2], "datatype": "FP64", "data": [1.0] * 6}]}
    with h.InProcess(serving_app(folder, poll_interval=0, max_batch_size=batching)) as client:
        for path, body in (("/predict", {"inputs": [[1.0, 2.0]] * 3}), ("/v2/models/m/infer", infer)):
            response = client.post(path, json=body)
            assert response.status_code == 500, response.text
            error = response.json()["error"]
            assert "step 'broken'" in error and "not of the request" in error, error
    assert any("step 'broken'" in r.getMessage() for r in caplog.records if r.levelname == "ERROR")


def test_the_same_output_asked_for_twice_is_refused(tmp_path):
    folder = h.save(two_feature_pipeline(), tmp_path)
    body = {"inputs": [{"name": "input", "shape": [1, 2], "datatype": "FP64", "data": [0.5, -0.5]}],
            "outputs": [{"name": "predictions"}, {"name": "probabilities"}, {"name": "predictions"}]}
    with h.InProcess(serving_app(folder, poll_interval=0)) as client:
        response = client.post("/v2/models/m/infer", json=body)
    assert response.status_code == 400 and "outputs[2].name" in response.json()["error"], response.text


def test_dataframe_split_without_columns_or_with_missing_ones_gets_a_400_naming_them(tmp_path):
    folder = h.save(h.dataframe_pipeline(), tmp_path)
    frame, _ = h.people_frame(n=4, seed=3)
    expected = h.dataframe_pipeline().predict(frame).tolist()
    with h.InProcess(serving_app(folder, poll_interval=0)) as client:
        no_columns = client.post("/predict", json={"dataframe_split": {"data": frame.values.tolist()}})
        assert no_columns.status_code == 400 and "missing columns ['city', 'age', 'income']" in no_columns.json()["error"]
        split = {"columns": ["city", "age"], "data": frame[["city", "age"]].values.tolist()}
        missing = client.post("/predict", json={"dataframe_split": split})
        assert missing.status_code == 400 and "missing columns ['income']" in missing.json()["error"], missing.text
        shuffled = frame[["income", "city", "age"]].assign(note="extra")  # other order, one column more
        body = {"dataframe_split": {"columns": list(shuffled.columns), "data": shuffled.values.tolist()}}
        response = client.post("/predict", json=body)
        assert response.status_code == 200 and response.json()["predictions"] == expected, response.text


# ------------------------------------------------------------------ the operator
def test_a_reload_to_another_input_width_updates_the_metadata_and_old_rows_get_a_4xx(tmp_path):
    folder = h.save(h.sklearn_pipeline(name="m"), tmp_path)
    application = serving_app(folder, poll_interval=0)
    with h.InProcess(application) as client:
        h.save(two_feature_pipeline(name="m"), tmp_path)
        assert application.state.server.model.check_for_new_dump()
        assert client.get("/v2/models/m").json()["inputs"][0]["shape"] == [-1, 2]
        old_rows = [[0.0] * 30]
        for response in (client.post("/predict", json={"inputs": old_rows}),
                         client.post("/v2/models/m/infer", json={"inputs": [
                             {"name": "input", "shape": [1, 30], "datatype": "FP64", "data": old_rows[0]}]})):
            assert response.status_code == 422 and "StandardScaler" in response.json()["error"], response.text
        assert client.post("/predict", content=ROW).status_code == 200


def test_a_served_dump_deleted_or_replaced_by_a_folder_that_is_no_dump_keeps_serving(tmp_path):
    folder = h.save(two_feature_pipeline(name="m"), tmp_path)
    application = serving_app(folder, poll_interval=0)
    with h.InProcess(application) as client:
        model = application.state.server.model
        digest = model.live.digest
        shutil.rmtree(folder)
        assert not model.check_for_new_dump() and client.post("/predict", content=ROW).status_code == 200
        folder.mkdir()
        (folder / "notes.txt").write_text("not a dump")
        assert not model.check_for_new_dump() and client.post("/predict", content=ROW).status_code == 200
        shutil.rmtree(folder)
        shutil.copytree(h.save(two_feature_pipeline(name="m"), tmp_path / "other"), folder)
        (folder / "stepline.json").unlink()
        os.mkfifo(folder / "stepline.json")  # a FIFO where the manifest belongs: must not block the watch
        assert not model.check_for_new_dump() and client.post("/predict", content=ROW).status_code == 200
        assert client.get("/v2/models/m").json()["versions"] == [digest]
        assert client.get("/v2/health/ready").status_code == 200


# ------------------------------------------------------------------ signals, reloads, workers
def test_sigterm_during_a_burst_answers_every_request_it_took_tears_down_and_exits_0(tmp_path):
    marker, started = tmp_path / "teardown.txt", tmp_path / "started"
    pipeline = two_feature_pipeline(h.TeardownMarker(str(marker), name="marker"),
                                    h.SlowStep(str(started), 0.02, name="slow"))
    server = h.Server(h.save(pipeline, tmp_path), "--poll-interval", "0")
    statuses, stop = [], threading.Event()

    def client():
        with httpx.Client(base_url=server.url, timeout=30) as http:
            while not stop.is_set():
                try:
                    statuses.append(http.post("/predict", content=ROW).status_code)
                except httpx.TransportError:  # the server has closed its socket: the burst is over
                    return

    try:
        server.wait_ready()
        threads = [threading.Thread(target=client) for _ in range(8)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 30
        while len(statuses) < 16:
            assert time.monotonic() < deadline, server.log
            time.sleep(0.01)  # polling a condition with a deadline
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(30) == 0, server.log
        stop.set()
        for thread in threads:
            thread.join(30)
    finally:
        stop.set()
        server.stop()
    assert statuses and set(statuses) == {200}, statuses
    assert marker.read_text().count("teardown") == 1


def test_sigterm_while_a_new_dump_is_being_set_up_tears_both_versions_down_once_and_exits_0(tmp_path):
    log = tmp_path / "lifecycle.txt"

    def version(setup_s):  # fitted here without a log, then told where the server's setups write
        pipeline = two_feature_pipeline(bad.SlowSetup(name="setup"))
        pipeline["setup"].set_hyperparams({"log": str(log), "delay": setup_s})
        return pipeline

    folder = h.save(version(0.0), tmp_path)
    server = h.Server(folder, "--poll-interval", "0.05")
    try:
        server.wait_ready()
        h.save(version(2.0), tmp_path)  # a new version, slow to set up
        deadline = time.monotonic() + 30
        while log.read_text().count("setup") < 2:  # the new version's setup has begun
            assert time.monotonic() < deadline, server.log
            time.sleep(0.01)  # polling a condition with a deadline
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(30) == 0, server.log
    finally:
        server.stop()
    assert log.read_text().split() == ["setup", "setup", "teardown", "teardown"], (log.read_text(), server.log_path.read_text())


def test_a_chunked_body_over_the_limit_gets_a_413_and_the_connection_closed_before_it_is_all_sent(tmp_path):
    folder = h.save(two_feature_pipeline(), tmp_path)
    server = h.Server(folder, "--poll-interval", "0", "--max-body-size", "100000")
    try:
        server.wait_ready()
        chunk = b"[0.5, 0.5]," * 10_000
        with connect(server) as s:
            s.sendall(b"POST /predict HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n"
                      b'%x\r\n{"inputs": [\r\n' % len(b'{"inputs": ['))
            sent = 0
            try:
                while sent < 1 << 30:  # a client that would send a GiB
                    s.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    sent += len(chunk)
            except OSError:  # the server closed the connection
                pass
            assert sent < 1 << 30
            answer = read_until_closed(s, 10)
        if answer:  # (a reset can drop the answer the server wrote before it closed)
            assert answer.startswith(b"HTTP/1.1 413") and "over the limit" in json_error(answer)[1], answer
        assert httpx.post(server.url + "/predict", content=ROW, timeout=10).status_code == 200
    finally:
        server.stop()


def test_two_workers_each_reload_a_new_dump_and_tear_both_versions_down(tmp_path):
    log = tmp_path / "lifecycle.txt"

    def version(C):
        pipeline = with_counter(two_feature_pipeline(), log)
        pipeline["LogisticRegression"].wrapped_sklearn_predictor.C = C  # another digest, same behaviour
        return pipeline

    folder = h.save(version(1.0), tmp_path)
    log.write_text("")
    server = h.Server(folder, "--poll-interval", "0.05", "--workers", "2")
    try:
        server.wait_ready()
        deadline = time.monotonic() + 60
        while len(set(log.read_text().split()[1::2])) < 2:  # both workers have set up
            assert time.monotonic() < deadline, server.log
            time.sleep(0.05)  # polling a condition with a deadline
        h.save(version(2.0), tmp_path)
        while log.read_text().split()[::2].count("setup") < 4:  # each worker has set the new one up
            assert time.monotonic() < deadline, server.log
            time.sleep(0.05)  # polling a condition with a deadline
        for _ in range(10):
            assert httpx.post(server.url + "/predict", content=ROW, timeout=10).status_code == 200
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(30) == 0, server.log
    finally:
        server.stop()
    events = log.read_text().split()
    for pid in set(events[1::2]):
        assert [e for e, p in zip(events[::2], events[1::2]) if p == pid] == ["setup", "setup", "teardown", "teardown"]


def with_counter(pipeline, log):
    """``pipeline`` with a SetupCounter first, told where to write only after the fit (the server's events alone)."""
    counted = h.with_steps(pipeline, ("counter", h.SetupCounter("")))
    counted["counter"].set_hyperparams({"log": str(log)})
    return counted


def test_a_pool_replaces_threads_stuck_in_a_call_up_to_its_limit_and_they_end_when_released():
    import asyncio

    from stepline.serving.threads import MAX_STUCK, PredictionThreads
    pool, release = PredictionThreads(1), threading.Event()

    async def replaced_once_busy() -> int:
        """replace_stuck(0) once the current thread has taken its call (0 if it never does)."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if replaced := pool.replace_stuck(0.0):
                return replaced
            await asyncio.sleep(0.01)  # polling a condition with a deadline
        return 0

    async def scenario():
        calls = [pool.submit(release.wait)]
        for _ in range(MAX_STUCK):  # each fresh thread takes the next call and is stuck in it too
            assert await replaced_once_busy() == 1
            calls.append(pool.submit(release.wait))
        deadline = time.monotonic() + 10
        while pool._threads[0] not in pool._busy_since:  # the last fresh thread is stuck as well
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)  # polling a condition with a deadline
        assert pool.replace_stuck(0.0) == 0  # the limit: no more threads
        release.set()
        assert await asyncio.wait_for(asyncio.gather(*calls), 10) == [True] * (MAX_STUCK + 1)
        assert await asyncio.wait_for(pool.submit(lambda: 42), 10) == 42

    try:
        asyncio.run(scenario())
        deadline = time.monotonic() + 10
        while pool._retired:  # every retired thread ends once its call has returned
            assert time.monotonic() < deadline, pool._retired
            time.sleep(0.01)  # polling a condition with a deadline
    finally:
        release.set()
        pool.shutdown()


def test_sigterm_while_the_first_setup_still_runs_stops_the_server_at_once(tmp_path):
    log = tmp_path / "lifecycle.txt"
    pipeline = two_feature_pipeline(bad.SlowSetup(name="setup"))
    pipeline["setup"].set_hyperparams({"log": str(log), "delay": 60.0})  # a model that takes a minute to load
    server = h.Server(h.save(pipeline, tmp_path), "--poll-interval", "0")
    try:
        deadline = time.monotonic() + 30
        while not (log.exists() and "setup" in log.read_text()):
            assert time.monotonic() < deadline and server.process.poll() is None, server.log
            time.sleep(0.01)  # polling a condition with a deadline
        server.process.send_signal(signal.SIGTERM)
        server.process.wait(20)  # not the minute the setup would take
        assert "before the pipeline was set up" in server.log
    finally:
        server.stop()
