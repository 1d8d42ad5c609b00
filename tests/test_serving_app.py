"""The serving app in-process (httpx's ASGI transport, lifespan entered): predictions, bad input, reload, batching."""
import json
import threading

import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("sklearn")
pytest.importorskip("pandas")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import serving_helpers as h  # noqa: E402
from stepline import Pipeline  # noqa: E402
from stepline.serving import app as serving_app  # noqa: E402


@pytest.fixture(scope="module")
def dumps(tmp_path_factory):
    root = tmp_path_factory.mktemp("dumps")
    return {"bc": h.save(h.sklearn_pipeline(), root), "people": h.save(h.dataframe_pipeline(), root)}


@pytest.fixture(scope="module")
def bc(dumps):
    with h.InProcess(serving_app(dumps["bc"], poll_interval=0, max_body_size=100_000)) as client:
        yield client


@pytest.fixture(scope="module")
def people(dumps):
    with h.InProcess(serving_app(dumps["people"], poll_interval=0)) as client:
        yield client


def infer_body(X, name="input", datatype="FP64"):
    X = np.asarray(X)
    return {"inputs": [{"name": name, "shape": list(X.shape), "datatype": datatype, "data": X.ravel().tolist()}]}


# ------------------------------------------------------------------ identical predictions
def test_predict_and_infer_match_in_process_predictions(bc):
    X, _ = h.breast_cancer()
    pipeline = h.sklearn_pipeline()
    expected = pipeline.predict(X[:50]).tolist()
    for path in ("/predict", "/invocations"):
        response = bc.post(path, json={"inputs": X[:50].tolist()})
        assert response.status_code == 200, response.text
        assert response.json() == {"predictions": expected}
    response = bc.post("/predict", json={"inputs": X[:5].tolist(), "params": {"proba": True}})
    proba = pipeline["LogisticRegression"].wrapped_sklearn_predictor.predict_proba(
        pipeline["StandardScaler"].transform(X[:5]))
    assert response.json()["predictions"] == proba.tolist()
    outputs = {o["name"]: o for o in bc.post("/v2/models/bc/infer", json=infer_body(X[:7])).json()["outputs"]}
    assert outputs["predictions"]["data"] == pipeline.predict(X[:7]).tolist()
    assert outputs["probabilities"]["shape"] == [7, 2]


def test_dataframe_pipeline_with_a_string_column_takes_every_request_shape(people):
    frame, _ = h.people_frame(n=30, seed=1)
    expected = h.dataframe_pipeline().predict(frame).tolist()
    split = json.loads(frame.to_json(orient="split", index=False))
    records = json.loads(frame.to_json(orient="records"))
    columns = {c: frame[c].tolist() for c in frame.columns}
    for body in ({"dataframe_split": split}, {"dataframe_records": records}, {"inputs": columns}):
        response = people.post("/predict", json=body)
        assert response.status_code == 200, response.text
        assert response.json()["predictions"] == expected
    tensors = {"inputs": [
        {"name": "city", "shape": [30], "datatype": "BYTES", "data": frame.city.tolist()},
        {"name": "age", "shape": [30, 1], "datatype": "INT64", "data": frame.age.tolist()},
        {"name": "income", "shape": [30], "datatype": "FP64", "data": frame.income.tolist()}]}
    response = people.post("/v2/models/people/infer", json=tensors)
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["data"] == expected
    metadata = people.get("/v2/models/people").json()
    assert [(i["name"], i["datatype"]) for i in metadata["inputs"]] == [
        ("city", "BYTES"), ("age", "FP64"), ("income", "FP64")]


def test_metadata_names_the_live_digest_and_outputs(bc, dumps):
    from stepline.serving.model import dump_digest
    metadata = bc.get("/v2/models/bc").json()
    assert metadata["versions"] == [dump_digest(dumps["bc"])]
    assert metadata["inputs"] == [{"name": "input", "datatype": "FP64", "shape": [-1, 30]}]
    assert [o["name"] for o in metadata["outputs"]] == ["predictions", "probabilities"]
    assert bc.get("/v2/models/bc/ready").json()["ready"] is True
    assert bc.get("/v2/health/ready").status_code == 200
    assert "binary_tensor_data" in bc.get("/v2").json()["extensions"]


# ------------------------------------------------------------------ bad requests
X_GOOD = [[0.0] * 30]
BAD_REQUESTS = [
    ("malformed JSON", "POST", "/predict", b'{"inputs": [[1, 2', {}, 400, "malformed JSON"),
    ("empty body", "POST", "/predict", b"", {}, 400, "empty"),
    ("not an object", "POST", "/predict", b"[1, 2]", {}, 400, "expected a JSON object"),
    ("no known key", "POST", "/predict", b'{"rows": []}', {}, 400, "exactly one of"),
    ("ragged rows", "POST", "/predict", b'{"inputs": [[1, 2], [3]]}', {}, 400, "rectangular"),
    ("pipeline raises", "POST", "/predict", b'{"inputs": [[1, 2, 3]]}', {}, 422, "StandardScaler"),
    ("strings to a numeric model", "POST", "/predict", json.dumps({"inputs": [["a"] * 30]}).encode(), {}, 422,
     "StandardScaler"),
    ("proba not a bool", "POST", "/predict", b'{"inputs": [[1]], "params": {"proba": "yes"}}', {}, 400,
     "body.params.proba"),
    ("unknown model", "POST", "/v2/models/nope/infer", json.dumps(infer_body(X_GOOD)).encode(), {}, 404, "nope"),
    ("unknown model metadata", "GET", "/v2/models/nope", b"", {}, 404, "unknown model"),
    ("unknown version", "GET", "/v2/models/bc/versions/abc", b"", {}, 404, "no version"),
    ("missing inputs", "POST", "/v2/models/bc/infer", b'{"outputs": []}', {}, 400, "body.inputs: missing"),
    ("wrong shape", "POST", "/v2/models/bc/infer",
     json.dumps({"inputs": [{"name": "input", "shape": [2, 30], "datatype": "FP64", "data": [0.0] * 30}]}).encode(),
     {}, 400, "inputs[0] ('input').data: 30 values, but shape holds 60"),
    ("negative shape", "POST", "/v2/models/bc/infer",
     json.dumps({"inputs": [{"name": "input", "shape": [-1, 30], "datatype": "FP64", "data": [0.0]}]}).encode(),
     {}, 400, ".shape"),
    ("wrong datatype", "POST", "/v2/models/bc/infer", json.dumps(infer_body([["x"] * 30])).encode(), {}, 400,
     "do not match datatype FP64"),
    ("unknown datatype", "POST", "/v2/models/bc/infer", json.dumps(infer_body(X_GOOD, datatype="FP128")).encode(),
     {}, 400, "unknown datatype"),
    ("int overflow", "POST", "/v2/models/bc/infer",
     json.dumps({"inputs": [{"name": "input", "shape": [1], "datatype": "INT32", "data": [2 ** 40]}]}).encode(),
     {}, 400, "outside the range of INT32"),
    ("unknown output", "POST", "/v2/models/bc/infer",
     json.dumps({**infer_body(X_GOOD), "outputs": [{"name": "logits"}]}).encode(), {}, 400, "outputs[0].name"),
    ("binary header past the body", "POST", "/v2/models/bc/infer", b'{"inputs": []}',
     {"Inference-Header-Content-Length": "999"}, 400, "Inference-Header-Content-Length"),
    ("binary size past the data", "POST", "/v2/models/bc/infer",
     json.dumps({"inputs": [{"name": "input", "shape": [1, 30], "datatype": "FP64",
                             "parameters": {"binary_data_size": 240}}]}).encode() + b"\0" * 8,
     {"Inference-Header-Content-Length": str(len(json.dumps({"inputs": [{"name": "input", "shape": [1, 30],
                                                                            "datatype": "FP64", "parameters": {
                                                                                "binary_data_size": 240}}]})))},
     400, "binary_data_size"),
    ("body over the limit", "POST", "/predict", b'{"inputs": [' + b"[0.5]," * 30000 + b"[0.5]]}", {}, 413,
     "over the limit"),
    ("gzip bomb", "POST", "/predict", __import__("gzip").compress(b" " * 200_000), {"Content-Encoding": "gzip"}, 413,
     "once decompressed"),
    ("not gzip", "POST", "/predict", b"plain", {"Content-Encoding": "gzip"}, 400, "not valid gzip"),
    ("unknown encoding", "POST", "/predict", b"{}", {"Content-Encoding": "br"}, 415, "Content-Encoding"),
    ("unknown endpoint", "GET", "/v3/models", b"", {}, 404, "no endpoint"),
    ("infer path with a stray segment", "POST", "/v2/models/bc/x/infer", b"{}", {}, 404, "no endpoint"),
    ("infer path without a name", "POST", "/v2/models//infer", b"{}", {}, 404, "no endpoint"),
    ("wrong method on infer", "GET", "/v2/models/bc/infer", b"", {}, 405, "not allowed"),
    ("Content-Length not a number", "POST", "/predict", b"{}", {"Content-Length": "x1"}, 400, "Content-Length"),
    ("wrong method", "GET", "/predict", b"", {}, 405, "not allowed"),
    ("deep JSON", "POST", "/predict", b"[" * 100000 + b"]" * 100000, {}, 413, "over the limit"),
    ("deep JSON under the limit", "POST", "/predict", b'{"inputs": ' + b"[" * 5000 + b"]" * 5000 + b"}", {}, 400,
     "nested too deeply"),
]


@pytest.mark.parametrize("case", BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS])
def test_every_bad_request_gets_its_4xx_naming_the_field(bc, case):
    _, method, path, body, headers, status, message = case
    response = bc.request(method, path, content=body, headers=headers)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]


def test_unknown_column_and_missing_column_are_named(people):
    body = {"inputs": [{"name": "city", "shape": [1], "datatype": "BYTES", "data": ["paris"]},
                       {"name": "height", "shape": [1], "datatype": "FP64", "data": [1.8]}]}
    error = people.post("/v2/models/people/infer", json=body).json()["error"]
    assert "unknown ['height']" in error and "missing ['age', 'income']" in error


JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                        max_size=4), max_leaves=20)
KEYS = st.sampled_from(["inputs", "instances", "dataframe_split", "dataframe_records", "params", "outputs",
                        "name", "shape", "datatype", "data", "parameters", "binary_data_size", "columns", "id"])
BODIES = st.one_of(
    st.binary(max_size=200),
    JSON_VALUES.map(lambda v: json.dumps(v).encode()),
    st.dictionaries(KEYS, JSON_VALUES, max_size=4).map(lambda v: json.dumps(v).encode()),
    st.lists(st.dictionaries(KEYS, JSON_VALUES, max_size=4), max_size=3).map(
        lambda tensors: json.dumps({"inputs": tensors}).encode()),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=BODIES, path=st.sampled_from(["/predict", "/v2/models/bc/infer", "/invocations"]),
       header=st.one_of(st.none(), st.integers(-5, 300).map(str), st.text(max_size=4)))
def test_garbage_bodies_never_get_a_5xx(bc, body, path, header):
    headers = {} if header is None else {"Inference-Header-Content-Length": header}
    try:
        response = bc.post(path, content=body, headers=headers)
    except UnicodeEncodeError:  # a header value that HTTP cannot carry: never reaches the server
        return
    assert response.status_code < 500, (body, response.text)
    if response.status_code >= 400:
        assert response.json()["error"]


# ------------------------------------------------------------------ reload
def test_a_new_dump_is_swapped_in_and_the_old_one_torn_down(tmp_path, dumps):
    marker = tmp_path / "teardowns.txt"
    first = h.sklearn_pipeline(C=1.0, name="m")
    folder = h.save(_with_marker(first, marker), tmp_path)
    application = serving_app(folder, poll_interval=0)
    with h.InProcess(application) as client:
        model = application.state.server.model
        old_digest = client.get("/v2/models/m").json()["versions"][0]
        h.save(_with_marker(h.sklearn_pipeline(C=0.001, name="m"), marker), tmp_path)
        assert model.check_for_new_dump() is True
        new_digest = client.get("/v2/models/m").json()["versions"][0]
        assert new_digest != old_digest
        X, _ = h.breast_cancer()
        expected = h.sklearn_pipeline(C=0.001).predict(X[:40]).tolist()
        assert client.post("/predict", json={"inputs": X[:40].tolist()}).json()["predictions"] == expected
        _wait_for(lambda: marker.exists() and len(marker.read_text().splitlines()) == 1)
    assert len(marker.read_text().splitlines()) == 2  # the new one at shutdown


def test_a_corrupted_new_dump_is_refused_and_the_old_one_keeps_serving(tmp_path, caplog):
    folder = h.save(h.sklearn_pipeline(name="m"), tmp_path)
    application = serving_app(folder, poll_interval=0)
    X, _ = h.breast_cancer()
    expected = h.sklearn_pipeline().predict(X[:10]).tolist()
    with h.InProcess(application) as client:
        model = application.state.server.model
        digest = model.live.digest
        h.save(h.sklearn_pipeline(C=0.01, name="m"), tmp_path)
        # a step's own file (its manifest holds a small pickle inline): not the root's manifest or signature
        victim = max((p for p in folder.rglob("*") if p.is_file() and p.parent != folder), key=lambda p: p.stat().st_size)
        victim.write_bytes(b"\0" * victim.stat().st_size)
        assert model.check_for_new_dump() is False
        assert model.live.digest == digest and len(model.refused) == 1
        assert "refused the new dump" in caplog.text
        assert client.post("/predict", json={"inputs": X[:10].tolist()}).json()["predictions"] == expected
        assert "stepline_model_refused_total 1" in client.get("/metrics").text
        assert model.check_for_new_dump() is False  # refused once, not retried every poll


def _with_marker(pipeline, marker):
    from stepline import Pipeline
    return Pipeline([*pipeline.items(), ("marker", h.TeardownMarker(str(marker)))]).set_name(pipeline.name)


def _wait_for(condition, timeout=10.0):
    done = threading.Event()
    deadline = threading.Timer(timeout, done.set)
    deadline.start()
    try:
        while not condition():
            if done.wait(0.01):
                raise AssertionError("condition not met in time")
    finally:
        deadline.cancel()


# ------------------------------------------------------------------ batching and metrics
def test_dynamic_batching_stacks_concurrent_requests_and_isolates_a_bad_one(dumps):
    from concurrent.futures import ThreadPoolExecutor
    X, _ = h.breast_cancer()
    expected = h.sklearn_pipeline().predict(X[:32]).tolist()
    application = serving_app(dumps["bc"], poll_interval=0, max_batch_size=64, max_latency_ms=50)
    with h.InProcess(application) as client:
        def one(i):  # request 5 holds NaN, which LogisticRegression refuses
            rows = [[float("nan")] * 30] if i == 5 else [X[i].tolist()]
            return client.post("/predict", content=json.dumps({"inputs": rows}))
        with ThreadPoolExecutor(16) as pool:
            responses = list(pool.map(one, range(32)))
        assert responses[5].status_code == 422
        for i, response in enumerate(responses):
            if i != 5:
                assert response.json()["predictions"] == [expected[i]], i
        text = client.get("/metrics").text
    counts = _histogram(text, "stepline_batch_rows")
    assert counts["+Inf"] < 32, "no two requests were batched"
    assert 'stepline_requests_total{endpoint="predict",status="200"} 31' in text
    assert 'stepline_request_errors_total{endpoint="predict"} 1' in text


def _histogram(text, name):
    counts = {}
    for line in text.splitlines():
        if line.startswith(name + "_bucket"):
            le = line.split('le="')[1].split('"')[0]
            counts[le] = int(line.rsplit(" ", 1)[1])
    return counts


@pytest.mark.parametrize("options", [{}, {"threads": 2}, {"max_batch_size": 8, "max_latency_ms": 2}],
                         ids=["default", "2 threads", "batching"])
def test_predictions_never_run_on_the_event_loop_thread(tmp_path, options):
    from concurrent.futures import ThreadPoolExecutor
    X, _ = h.breast_cancer()
    log = tmp_path / "threads.log"
    pipeline = h.with_steps(h.sklearn_pipeline(), ("recorder", h.ThreadRecorder(str(log))))
    expected = pipeline.predict(X[:16]).tolist()
    log.unlink()
    with h.InProcess(serving_app(h.save(pipeline, tmp_path), poll_interval=0, **options)) as client:
        with ThreadPoolExecutor(8) as pool:
            responses = list(pool.map(lambda i: client.post("/predict", json={"inputs": [X[i].tolist()]}), range(16)))
        loop_thread = client._thread.ident
    assert [r.json()["predictions"] for r in responses] == [[e] for e in expected]
    seen = [line.split(" ", 1) for line in log.read_text().splitlines()]
    assert seen, "the step was never called"
    assert all(int(ident) != loop_thread for ident, _ in seen), "a prediction ran on the event loop's thread"
    assert all(name.startswith("stepline-predict") for _, name in seen), {name for _, name in seen}


def test_a_lone_request_on_an_idle_batcher_does_not_wait_for_the_latency_bound(dumps):
    import time
    X, _ = h.breast_cancer()
    application = serving_app(dumps["bc"], poll_interval=0, max_batch_size=64, max_latency_ms=20_000)
    with h.InProcess(application) as client:
        started = time.monotonic()
        response = client.post("/predict", json={"inputs": X[:1].tolist()})
        assert response.status_code == 200
        assert time.monotonic() - started < 10  # an idle pipeline starts at once, not after 20 s


def test_an_untrusted_new_dump_is_refused_and_the_old_one_keeps_serving(tmp_path):
    pytest.importorskip("stepline.trust")
    folder = h.save(h.sklearn_pipeline(name="m"), tmp_path)
    application = serving_app(folder, poll_interval=0)
    with h.InProcess(application) as client:
        model = application.state.server.model
        digest = model.live.digest
        h.save(h.with_steps(h.sklearn_pipeline(C=0.01, name="m"), ("counter", h.SetupCounter(str(tmp_path / "log")))),
               tmp_path)
        (folder / "stepline.sig").unlink()  # nobody vouches for it now
        assert model.check_for_new_dump() is False
        assert model.live.digest == digest
        assert "UntrustedDumpError" in next(iter(model.refused.values()))
        assert client.get("/v2/models/m").json()["versions"] == [digest]
        assert not (tmp_path / "log").exists()  # none of its code ran


def test_outputs_without_a_protocol_datatype_are_sent_as_strings(tmp_path):
    folder = h.save(Pipeline([h.DayStep()]).set_name("days"), tmp_path)
    with h.InProcess(serving_app(folder, poll_interval=0)) as client:
        assert client.post("/predict", json={"inputs": [[1], [2]]}).json() == {"predictions": ["2026-01-02", "2026-01-03"]}
        outputs = client.post("/v2/models/days/infer", json=infer_body([[1]], datatype="INT64")).json()["outputs"]
        assert outputs == [{"name": "predictions", "datatype": "BYTES", "shape": [1], "data": ["2026-01-02"]}]


def test_a_setup_that_fails_stops_startup_with_the_reason(tmp_path):
    from stepline.serving.model import ModelLoadError
    folder = h.save(Pipeline([h.FailingSetup()]).set_name("gpu"), tmp_path)
    with pytest.raises(ModelLoadError, match="setup failed: RuntimeError: no GPU here"):
        with h.InProcess(serving_app(folder, poll_interval=0)):
            pass


# ------------------------------------------------------------------ the hot endpoints' fast path
def test_a_request_id_utf8_cannot_encode_is_sent_back_escaped(bc):
    body = {**infer_body(X_GOOD), "id": "req-\ud800"}
    response = bc.post("/v2/models/bc/infer", content=json.dumps(body))
    assert response.status_code == 200, response.text
    assert response.json()["id"] == "req-\ud800"


def test_middleware_added_to_the_app_sees_the_hot_endpoints_too(dumps):
    X, _ = h.breast_cancer()
    application = serving_app(dumps["bc"], poll_interval=0)
    seen = []

    class Tagging:  # raw ASGI middleware: records each path, tags each response
        def __init__(self, app):
            self.app = app

        async def __call__(self, scope, receive, send):
            if scope["type"] != "http":
                return await self.app(scope, receive, send)
            seen.append(scope["path"])

            async def tagged(message):
                if message["type"] == "http.response.start":
                    message = {**message, "headers": [*message["headers"], (b"x-tag", b"1")]}
                await send(message)
            await self.app(scope, receive, tagged)

    application.add_middleware(Tagging)
    with h.InProcess(application) as client:
        predict = client.post("/predict", json={"inputs": X[:2].tolist()})
        infer = client.post("/v2/models/bc/infer", json=infer_body(X[:2]))
        bad = client.post("/v2/models/bc/infer", content=b"{")
    assert predict.json()["predictions"] == h.sklearn_pipeline().predict(X[:2]).tolist()
    assert infer.status_code == 200 and bad.status_code == 400
    assert [r.headers.get("x-tag") for r in (predict, infer, bad)] == ["1", "1", "1"]
    assert seen == ["/predict", "/v2/models/bc/infer", "/v2/models/bc/infer"]


def test_the_app_mounted_under_a_prefix_serves_the_hot_endpoints(dumps):
    from starlette.applications import Starlette
    from starlette.routing import Mount
    X, _ = h.breast_cancer()
    served = serving_app(dumps["bc"], poll_interval=0)
    outer = Starlette(routes=[Mount("/models/bc", app=served)],
                      lifespan=lambda _outer: served.router.lifespan_context(served))
    expected = h.sklearn_pipeline().predict(X[:3]).tolist()
    with h.InProcess(outer) as client:
        assert client.post("/models/bc/predict", json={"inputs": X[:3].tolist()}).json()["predictions"] == expected
        outputs = client.post("/models/bc/v2/models/bc/infer", json=infer_body(X[:3])).json()["outputs"]
        assert outputs[0]["data"] == expected
        assert client.post("/predict", json={"inputs": X[:3].tolist()}).status_code == 404


def test_a_client_gone_before_its_body_gets_no_answer_and_no_error_logged(bc, caplog):
    import asyncio
    sent = []

    async def receive():
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/predict", "raw_path": b"/predict", "query_string": b"", "root_path": "",
             "headers": [(b"content-length", b"10")], "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}
    with caplog.at_level("ERROR", logger="stepline.serving"):
        asyncio.run_coroutine_threadsafe(bc.app(scope, receive, send), bc.loop).result(30)
    assert sent == [] and not caplog.records


def test_a_chunked_body_is_read_whole_and_held_to_the_size_limit(bc):
    X, _ = h.breast_cancer()
    body = json.dumps({"inputs": X[:20].tolist()}).encode()

    async def chunks(data, size=1000):  # no Content-Length: httpx streams it in chunks
        for start in range(0, len(data), size):
            yield data[start:start + size]

    response = bc.post("/predict", content=chunks(body))
    assert response.status_code == 200, response.text
    assert response.json()["predictions"] == h.sklearn_pipeline().predict(X[:20]).tolist()
    too_big = bc.post("/predict", content=chunks(b'{"inputs": [' + b"[0.5]," * 30000 + b"[0.5]]}"))
    assert too_big.status_code == 413 and "over the limit" in too_big.json()["error"]
