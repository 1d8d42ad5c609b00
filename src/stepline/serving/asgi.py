"""The ASGI app: Open Inference Protocol v2 and plain JSON over one served dump (Starlette).

``stepline.serving.app(PATH, ...)`` returns it, for ``stepline serve`` and for users who
mount it in their own server. Its lifespan is the pipeline's lifecycle: the dump is loaded
and set up before the first request, and torn down at shutdown after the requests in
flight. Predictions run on a thread pool, off the event loop. Every refused request is a
4xx whose JSON body ``{"error": "..."}`` names the field at fault.

The hot endpoints, ``POST /v2/models/{name}/infer`` and ``POST /predict`` (``/invocations``),
are raw ASGI endpoints. Starlette routes to them like to any other; and while no
middleware has been added to the app, its ``__call__`` hands a POST to one of their paths
straight to them, past Starlette's middleware stack, router, Request and Response objects
(a fifth of the server's own time on a one-row request).
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import sys
import time

from stepline.serving import json_codec, protocol, tensors
from stepline.serving.batching import Batcher
from stepline.serving.metrics import Metrics
from stepline.serving.model import ModelLoadError, OutputError, PredictionError, ServedModel
from stepline.serving.protocol import RequestError
from stepline.serving.startup import start_or_stop
from stepline.serving.threads import PredictionThreads

logger = logging.getLogger("stepline.serving")

DEFAULT_MAX_BODY_SIZE = 64 * 1024 * 1024
#: Prediction threads when ``threads`` is not given. One, which takes every call queued when
#: it wakes (see threads.py): a scikit-learn ``predict`` on a few rows holds the GIL, so a
#: second thread only adds GIL hand-offs. Pipelines whose ``predict`` releases the GIL (a
#: large torch model) can overlap requests with ``threads=N``.
DEFAULT_THREADS = 1
#: How long a request may take, by default, to send its body and to get its prediction (408 and
#: 504 beyond); ``stepline serve`` also gives a connection this long to send a request's headers.
DEFAULT_TIMEOUT_S = 60.0
_JSON = [(b"content-type", b"application/json")]
_INFER_PREFIX, _INFER_SUFFIX = "/v2/models/", "/infer"


def app(path, model_name: str | None = None, trusted: bool = False, max_batch_size: int | None = None,
        max_latency_ms: float = 5.0, max_body_size: int = DEFAULT_MAX_BODY_SIZE, threads: int | None = None,
        poll_interval: float = 1.0, timeout_s: float | None = DEFAULT_TIMEOUT_S):
    """The Starlette app serving the dump at ``path``.

    ``model_name`` defaults to the dump folder's name; ``trusted=True`` loads a dump that is
    not signed by a trusted key; ``max_batch_size`` turns on dynamic batching (requests
    within ``max_latency_ms`` share one predict); ``max_body_size`` (bytes) is the largest
    request body (413 beyond); ``threads`` sizes the prediction pool (default 1); the
    dump's root digest is checked every ``poll_interval`` seconds for a new dump (0: never);
    ``timeout_s`` bounds how long a request may take to send its body (408 beyond) and to get its
    prediction (504 beyond: the prediction thread, if stuck, is replaced); None or 0: no bound.
    """
    from starlette.exceptions import HTTPException
    from starlette.routing import Route

    server = _Server(ServedModel(path, model_name, trusted, poll_interval), max_batch_size,
                     max_latency_ms / 1000.0, max_body_size, threads, timeout_s or None)
    infer = _Endpoint(server, "infer", server.infer)
    predict = _Endpoint(server, "predict", server.plain_predict)
    routes = [
        Route("/v2/health/live", server.live, methods=["GET"]),
        Route("/v2/health/ready", server.ready, methods=["GET"]),
        Route("/v2", server.server_metadata, methods=["GET"]),
        Route("/v2/models/{name}", server.model_metadata, methods=["GET"]),
        Route("/v2/models/{name}/versions/{version}", server.model_metadata, methods=["GET"]),
        Route("/v2/models/{name}/ready", server.model_ready, methods=["GET"]),
        Route("/v2/models/{name}/versions/{version}/ready", server.model_ready, methods=["GET"]),
        Route("/v2/models/{name}/infer", infer, methods=["POST"]),
        Route("/v2/models/{name}/versions/{version}/infer", infer, methods=["POST"]),
        Route("/predict", predict, methods=["POST"]),
        Route("/invocations", predict, methods=["POST"]),
        Route("/ping", server.live, methods=["GET"]),
        Route("/metrics", server.metrics_text, methods=["GET"]),
    ]
    application = _app_class()(routes=routes, lifespan=server.lifespan,
                               exception_handlers={HTTPException: _http_error, Exception: _internal_error})
    application.state.server = server
    application.fast_routes = {"/predict": predict, "/invocations": predict}
    application.infer_endpoint = infer
    return application


@functools.lru_cache(maxsize=None)
def _app_class():
    """The Starlette subclass whose ``__call__`` sends the hot POSTs straight to their endpoints."""
    from starlette.applications import Starlette

    class ServingApp(Starlette):
        async def __call__(self, scope, receive, send):
            if scope["type"] == "http" and scope["method"] == "POST" and not self.user_middleware:
                endpoint = self._fast_endpoint(scope)
                if endpoint is not None:
                    scope["app"] = self
                    return await endpoint(scope, receive, send)
            if scope["type"] == "lifespan":
                send = _startup_failure_logged_once(send)
            await super().__call__(scope, receive, send)

        def _fast_endpoint(self, scope):
            path = scope["path"]
            root = scope.get("root_path", "")
            if root and path.startswith(root):  # mounted under a prefix
                path = path[len(root):]
            endpoint = self.fast_routes.get(path)
            if endpoint is not None:
                scope["path_params"] = {}
                return endpoint
            params = infer_path_params(path)
            if params is None:
                return None  # the router answers (a 404 or 405 in JSON)
            scope["path_params"] = params
            return self.infer_endpoint

    return ServingApp


def _startup_failure_logged_once(send):
    """``send`` for the lifespan: a startup that failed with :class:`ModelLoadError` (the lifespan
    logged its one line) reaches the server without Starlette's traceback of it."""
    async def send_lifespan(message):
        if message["type"] == "lifespan.startup.failed" and isinstance(sys.exc_info()[1], ModelLoadError):
            message = {**message, "message": ""}  # sent from inside Starlette's ``except`` block
        await send(message)
    return send_lifespan


def infer_path_params(path: str) -> dict | None:
    """``{"name": ..., ["version": ...]}`` of ``/v2/models/NAME[/versions/VERSION]/infer``, else None."""
    if not (path.startswith(_INFER_PREFIX) and path.endswith(_INFER_SUFFIX)):
        return None
    parts = path[len(_INFER_PREFIX):-len(_INFER_SUFFIX)].split("/")
    if len(parts) == 1 and parts[0]:
        return {"name": parts[0]}
    if len(parts) == 3 and parts[1] == "versions" and parts[0] and parts[2]:
        return {"name": parts[0], "version": parts[2]}
    return None


def _json(payload, status: int = 200, headers=None):
    from starlette.responses import Response
    return Response(protocol.dumps(payload), status, headers=headers, media_type="application/json")


async def _http_error(request, exc):
    detail = exc.detail if exc.status_code != 405 else f"{request.method} is not allowed on {request.url.path}"
    if exc.status_code == 404:
        detail = f"no endpoint {request.url.path}; see /v2, /v2/models/<name>, /predict"
    return _json({"error": detail}, exc.status_code, getattr(exc, "headers", None))


async def _internal_error(request, exc):  # a bug of the server, never the client's input
    logger.error("internal error on %s %s", request.method, request.url.path, exc_info=exc)
    return _json({"error": f"internal server error: {type(exc).__name__}"}, 500)


class _ClientGone(Exception):
    """The client disconnected before its body was read: nobody to answer."""


class _Endpoint:
    """A POST endpoint as a raw ASGI app: ``handler(path_params, headers, body)`` → ``(status, body, headers)``.

    The body is read under the size limit; every refusal is a JSON error, counted in the metrics.
    """

    def __init__(self, server: "_Server", name: str, handler):
        self.server = server
        self.name = name
        self.handler = handler

    async def __call__(self, scope, receive, send):
        started = time.perf_counter()
        headers = dict(reversed(scope["headers"]))  # the first of repeated headers wins, as in Starlette
        deadline = _Deadline(self.server.timeout_s)
        try:
            body = await self.server.read_body(headers, receive)
            deadline.body_read = True
            status, content, reply_headers = await self.handler(scope.get("path_params") or {}, headers, body)
        except _ClientGone:
            return
        except asyncio.CancelledError:
            if not deadline.expired:
                raise
            status, content, reply_headers = self._timed_out(deadline)
        except RequestError as error:
            status, content, reply_headers = _error(error.status, str(error))
        except PredictionError as error:
            status, content, reply_headers = _error(422, str(error))
        except OutputError as error:  # the served pipeline's fault: logged, one line, no traceback
            logger.error("POST %s: %s", scope["path"], error)
            status, content, reply_headers = _error(500, f"{error} (a fault of the served pipeline, not of the request)")
        except ModelLoadError as error:
            status, content, reply_headers = _error(503, str(error))
        except Exception as error:  # a bug of the server, never the client's input
            logger.error("internal error on POST %s", scope["path"], exc_info=error)
            status, content, reply_headers = _error(500, f"internal server error: {type(error).__name__}")
        finally:
            deadline.cancel()
        self.server.metrics.observe(self.name, status, time.perf_counter() - started)
        if status in (408, 413):  # the body was not read to its end: what follows on the connection is not a request
            reply_headers = [*reply_headers, (b"connection", b"close")]
        await send({"type": "http.response.start", "status": status,
                    "headers": [*reply_headers, (b"content-length", b"%d" % len(content))]})
        await send({"type": "http.response.body", "body": content})

    def _timed_out(self, deadline: "_Deadline"):
        limit = self.server.timeout_s
        if not deadline.body_read:
            return _error(408, f"body: not received within {limit:g} s (the server's --timeout-s)")
        replaced = self.server.threads.replace_stuck(limit / 2)  # its call began after the request
        why = " (its prediction thread was stuck and has been replaced)" if replaced else ""
        return _error(504, f"the prediction was not ready within {limit:g} s (the server's --timeout-s){why}")


class _Deadline:
    """Cancels the running request task ``timeout_s`` after it started (``expired`` then says why)."""

    __slots__ = ("task", "timer", "expired", "body_read")

    def __init__(self, timeout_s: float | None):
        self.expired = self.body_read = False
        self.timer = None
        self.task = asyncio.current_task()
        if timeout_s and self.task is not None:
            self.timer = asyncio.get_running_loop().call_later(timeout_s, self._expire)

    def _expire(self) -> None:
        self.expired = True
        self.task.cancel()

    def cancel(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            if self.expired:
                self.task.uncancel()


def _error(status: int, message: str):
    return status, protocol.dumps({"error": message}), _JSON


class _Server:
    """The endpoints, around one :class:`ServedModel`."""

    def __init__(self, model: ServedModel, max_batch_size, max_latency_s, max_body_size, threads, timeout_s):
        self.model = model
        self.max_body_size = max_body_size
        self.timeout_s = timeout_s
        self.metrics = Metrics()
        self.threads = PredictionThreads(threads or DEFAULT_THREADS)
        self.batcher = (Batcher(self._run, self.threads, max_batch_size, max_latency_s, self.metrics)
                        if max_batch_size else None)

    # ------------------------------------------------------------ lifecycle
    @contextlib.asynccontextmanager
    async def lifespan(self, _app):
        try:
            await start_or_stop(self.threads.submit(self.model.start))
        except ModelLoadError as error:
            logger.error("cannot serve: %s", error)
            raise
        try:
            yield
        finally:  # uvicorn runs this after the requests in flight have been answered
            # on a thread of its own: the prediction threads may be stuck in a call that never returns
            await asyncio.to_thread(self.model.stop, self.timeout_s)
            self.threads.shutdown(wait=False)

    # ------------------------------------------------------------ health and metadata (Starlette endpoints)
    async def live(self, request):
        return _json({"live": True})

    async def ready(self, request):
        ready = self.model.ready
        return _json({"ready": ready}, 200 if ready else 503)

    async def server_metadata(self, request):
        import stepline
        return _json({"name": "stepline", "version": stepline.__version__,
                      "extensions": ["binary_tensor_data", "model_repository_free"]})

    def _version_for(self, params: dict):
        """The live version if ``params`` name this model (and its version); else a 404 RequestError."""
        name = params["name"]
        if name != self.model.name:
            raise RequestError(f"unknown model {name!r}; this server serves {self.model.name!r}", 404)
        live = self.model.live
        version = params.get("version")
        if version not in (None, "", live.digest):
            raise RequestError(f"model {name!r} has no version {version!r}; the live version is {live.digest}", 404)
        return live

    async def model_metadata(self, request):
        return await self._handle("metadata", request, self._metadata)

    async def _metadata(self, request):
        live = self._version_for(request.path_params)
        payload = {"name": self.model.name, "versions": [live.digest], "platform": "stepline",
                   "inputs": tensors.input_metadata(live), "outputs": tensors.output_metadata(live)}
        if live.classes is not None:
            payload["parameters"] = {"classes": tensors.to_jsonable(live.classes)}
        return _json(payload)

    async def model_ready(self, request):
        return await self._handle("ready", request, self._model_ready)

    async def _model_ready(self, request):
        self._version_for(request.path_params)
        return _json({"name": self.model.name, "ready": self.model.ready})

    async def metrics_text(self, request):
        from starlette.responses import Response
        return Response(self.metrics.render(self.model), media_type="text/plain; version=0.0.4")

    async def _handle(self, endpoint: str, request, handler):
        started = time.perf_counter()
        try:
            response = await handler(request)
        except RequestError as error:
            response = _json({"error": str(error)}, error.status)
        except ModelLoadError as error:
            response = _json({"error": str(error)}, 503)
        self.metrics.observe(endpoint, response.status_code, time.perf_counter() - started)
        return response

    # ------------------------------------------------------------ inference (raw ASGI endpoints)
    async def infer(self, params: dict, headers: dict, body: bytes):
        live = self._version_for(params)
        header_length = headers.get(b"inference-header-content-length")
        decoded = protocol.parse_infer_request(body, None if header_length is None else header_length.decode("latin-1"))
        available = tensors.output_names(live)
        wanted = decoded.outputs or [(name, decoded.binary_output) for name in available]
        for i, (name, _) in enumerate(wanted):
            if name not in available:
                raise RequestError(f"outputs[{i}].name: unknown output {name!r}; this model has {available}")
            if any(name == earlier for earlier, _ in wanted[:i]):
                raise RequestError(f"outputs[{i}].name: output {name!r} asked for twice")
        data = tensors.data_from_tensors(decoded.inputs, live)
        kinds = tuple(name == tensors.PROBABILITIES for name, _ in wanted)
        version, results = await self._predict(data, kinds)  # every output from one version, in one call
        outputs = [tensors.as_output_tensor(name, result) for (name, _), result in zip(wanted, results)]
        content, extra = protocol.encode_infer_response(
            self.model.name, version, decoded.id, outputs, {n for n, binary in wanted if binary})
        return 200, content, [(k.encode("latin-1"), v.encode("latin-1")) for k, v in extra.items()]

    async def plain_predict(self, params: dict, headers: dict, body: bytes):
        decoded = protocol.parse_plain_request(body)
        live = self.model.live
        if decoded.proba and not live.has_proba:
            raise RequestError("body.params.proba: the model's last step has no predict_proba")
        data = decoded.data
        if hasattr(data, "columns"):
            data = tensors.from_frame(data, live, "body")
        else:
            data = tensors.data_from_array(data, live, "body.inputs")
        _, (result,) = await self._predict(data, (decoded.proba,))
        return 200, json_codec.dumps({"predictions": json_codec.jsonable(result, tensors.to_jsonable)}), _JSON

    async def _predict(self, data, kinds: tuple):
        """``(digest, [outputs per kind])``: ``kinds`` holds True for probabilities, False for predictions."""
        if len(data) == 0:
            raise RequestError("body: no rows to predict")
        if self.batcher is not None:
            return await self.batcher.submit(data, kinds)
        return await self.threads.submit(self._run, data, kinds)

    def _run(self, data, kinds: tuple):
        """On a pool thread: ``(digest, [outputs per kind])`` of the live version for ``data``."""
        version = self.model.acquire()
        try:
            return version.digest, [version.predict_proba(data) if proba else version.predict(data) for proba in kinds]
        finally:
            version.leave()

    # ------------------------------------------------------------ plumbing
    async def read_body(self, headers: dict, receive) -> bytes:
        """The request body, decompressed (gzip/deflate, as tritonclient can send); 413 over the limit."""
        limit = self.max_body_size
        length = headers.get(b"content-length")
        if length is not None:
            if not length.isdigit():
                raise RequestError(f"Content-Length: not a number: {length[:40].decode('latin-1')!r}")
            if int(length) > limit:
                raise RequestError(f"body: {int(length)} bytes is over the limit of {limit}", 413)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                raise _ClientGone()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise RequestError(f"body: over the limit of {limit} bytes", 413)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        raw = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        encoding = headers.get(b"content-encoding")
        if encoding is None:
            return raw
        encoding = encoding.decode("latin-1").strip().lower()
        return raw if encoding == "identity" else protocol.decompress(raw, encoding, limit)
