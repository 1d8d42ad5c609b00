"""The ASGI app: Open Inference Protocol v2 and plain JSON over one served dump (Starlette).

``stepline.serving.app(PATH, ...)`` returns it, for ``stepline serve`` and for users who
mount it in their own server. Its lifespan is the pipeline's lifecycle: the dump is loaded
and set up before the first request, and torn down at shutdown after the requests in
flight. Predictions run on a thread pool, off the event loop. Every refused request is a
4xx whose JSON body ``{"error": "..."}`` names the field at fault.
"""
from __future__ import annotations

import contextlib
import logging
import os
import time

from stepline.serving import protocol, tensors
from stepline.serving.batching import Batcher
from stepline.serving.metrics import Metrics
from stepline.serving.model import ModelLoadError, PredictionError, ServedModel
from stepline.serving.protocol import RequestError
from stepline.serving.threads import PredictionThreads

logger = logging.getLogger("stepline.serving")

DEFAULT_MAX_BODY_SIZE = 64 * 1024 * 1024


def app(path, model_name: str | None = None, trusted: bool = False, max_batch_size: int | None = None,
        max_latency_ms: float = 5.0, max_body_size: int = DEFAULT_MAX_BODY_SIZE, threads: int | None = None,
        poll_interval: float = 1.0):
    """The Starlette app serving the dump at ``path``.

    ``model_name`` defaults to the dump folder's name; ``trusted=True`` loads a dump that is
    not signed by a trusted key; ``max_batch_size`` turns on dynamic batching (requests
    within ``max_latency_ms`` share one predict); ``max_body_size`` (bytes) is the largest
    request body (413 beyond); ``threads`` sizes the prediction pool; the dump's root
    digest is checked every ``poll_interval`` seconds for a new dump (0: never).
    """
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.routing import Route

    server = _Server(ServedModel(path, model_name, trusted, poll_interval), max_batch_size,
                     max_latency_ms / 1000.0, max_body_size, threads)
    routes = [
        Route("/v2/health/live", server.live, methods=["GET"]),
        Route("/v2/health/ready", server.ready, methods=["GET"]),
        Route("/v2", server.server_metadata, methods=["GET"]),
        Route("/v2/models/{name}", server.model_metadata, methods=["GET"]),
        Route("/v2/models/{name}/versions/{version}", server.model_metadata, methods=["GET"]),
        Route("/v2/models/{name}/ready", server.model_ready, methods=["GET"]),
        Route("/v2/models/{name}/versions/{version}/ready", server.model_ready, methods=["GET"]),
        Route("/v2/models/{name}/infer", server.infer, methods=["POST"]),
        Route("/v2/models/{name}/versions/{version}/infer", server.infer, methods=["POST"]),
        Route("/predict", server.predict, methods=["POST"]),
        Route("/invocations", server.predict, methods=["POST"]),
        Route("/ping", server.live, methods=["GET"]),
        Route("/metrics", server.metrics_text, methods=["GET"]),
    ]
    application = Starlette(routes=routes, lifespan=server.lifespan,
                            exception_handlers={HTTPException: _http_error, Exception: _internal_error})
    application.state.server = server
    return application


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


class _Server:
    """The endpoints, around one :class:`ServedModel`."""

    def __init__(self, model: ServedModel, max_batch_size, max_latency_s, max_body_size, threads):
        self.model = model
        self.max_body_size = max_body_size
        self.metrics = Metrics()
        self.threads = PredictionThreads(threads or min(32, (os.cpu_count() or 1) + 4))
        self.batcher = (Batcher(self._run, self.threads, max_batch_size, max_latency_s, self.metrics)
                        if max_batch_size else None)

    # ------------------------------------------------------------ lifecycle
    @contextlib.asynccontextmanager
    async def lifespan(self, _app):
        try:
            await self.threads.submit(self.model.start)
        except ModelLoadError as error:
            logger.error("cannot serve: %s", error)
            raise
        try:
            yield
        finally:  # uvicorn runs this after the requests in flight have been answered
            await self.threads.submit(self.model.stop)
            self.threads.shutdown(wait=False)

    # ------------------------------------------------------------ health and metadata
    async def live(self, request):
        return _json({"live": True})

    async def ready(self, request):
        ready = self.model.ready
        return _json({"ready": ready}, 200 if ready else 503)

    async def server_metadata(self, request):
        import stepline
        return _json({"name": "stepline", "version": stepline.__version__,
                      "extensions": ["binary_tensor_data", "model_repository_free"]})

    def _version_for(self, request):
        """The live version if the path names this model (and its version); else a 404 RequestError."""
        name = request.path_params["name"]
        if name != self.model.name:
            raise RequestError(f"unknown model {name!r}; this server serves {self.model.name!r}", 404)
        live = self.model.live
        version = request.path_params.get("version")
        if version not in (None, "", live.digest):
            raise RequestError(f"model {name!r} has no version {version!r}; the live version is {live.digest}", 404)
        return live

    async def model_metadata(self, request):
        return await self._handle("metadata", request, self._metadata)

    async def _metadata(self, request):
        live = self._version_for(request)
        payload = {"name": self.model.name, "versions": [live.digest], "platform": "stepline",
                   "inputs": tensors.input_metadata(live), "outputs": tensors.output_metadata(live)}
        if live.classes is not None:
            payload["parameters"] = {"classes": tensors.to_jsonable(live.classes)}
        return _json(payload)

    async def model_ready(self, request):
        return await self._handle("ready", request, self._model_ready)

    async def _model_ready(self, request):
        self._version_for(request)
        return _json({"name": self.model.name, "ready": self.model.ready})

    async def metrics_text(self, request):
        from starlette.responses import Response
        return Response(self.metrics.render(self.model), media_type="text/plain; version=0.0.4")

    # ------------------------------------------------------------ inference
    async def infer(self, request):
        return await self._handle("infer", request, self._infer)

    async def _infer(self, request):
        live = self._version_for(request)
        decoded = protocol.parse_infer_request(await self._body(request), request.headers.get(protocol.HEADER_LENGTH))
        available = tensors.output_names(live)
        wanted = decoded.outputs or [(name, decoded.binary_output) for name in available]
        for i, (name, _) in enumerate(wanted):
            if name not in available:
                raise RequestError(f"outputs[{i}].name: unknown output {name!r}; this model has {available}")
        data = tensors.data_from_tensors(decoded.inputs, live)
        while True:
            outputs, versions = [], set()
            for name, _ in wanted:
                version, result = await self._predict(data, proba=name == tensors.PROBABILITIES)
                outputs.append(tensors.as_output_tensor(name, result))
                versions.add(version)
            if len(versions) == 1:  # else a reload came between two outputs: both again, from the new one
                break
        body, headers = protocol.encode_infer_response(
            self.model.name, versions.pop(), decoded.id, outputs, {n for n, binary in wanted if binary})
        from starlette.responses import Response
        return Response(body, headers=headers)

    async def predict(self, request):
        return await self._handle("predict", request, self._plain_predict)

    async def _plain_predict(self, request):
        decoded = protocol.parse_plain_request(await self._body(request))
        live = self.model.live
        if decoded.proba and not live.has_proba:
            raise RequestError("body.params.proba: the model's last step has no predict_proba")
        data = decoded.data
        if hasattr(data, "columns"):
            data = tensors.from_frame(data, live)
        else:
            data = tensors.data_from_array(data, live, "body.inputs")
        _, result = await self._predict(data, decoded.proba)
        return _json({"predictions": tensors.to_jsonable(result)})

    async def _predict(self, data, proba: bool):
        if len(data) == 0:
            raise RequestError("body: no rows to predict")
        if self.batcher is not None:
            return await self.batcher.submit(data, proba)
        return await self.threads.submit(self._run, data, proba)

    def _run(self, data, proba: bool):
        """On a pool thread: ``(digest, outputs)`` of the live version for ``data``."""
        with self.model.use() as version:
            return version.digest, (version.predict_proba(data) if proba else version.predict(data))

    # ------------------------------------------------------------ plumbing
    async def _body(self, request) -> bytes:
        """The request body, decompressed (gzip/deflate, as tritonclient can send); 413 over the limit."""
        raw = await self._raw_body(request)
        encoding = request.headers.get("content-encoding", "identity").strip().lower()
        if encoding == "identity":
            return raw
        return protocol.decompress(raw, encoding, self.max_body_size)

    async def _raw_body(self, request) -> bytes:
        length = request.headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                raise RequestError(f"Content-Length: not a number: {length[:40]!r}")
            if int(length) > self.max_body_size:
                raise RequestError(f"body: {int(length)} bytes is over the limit of {self.max_body_size}", 413)
            return await request.body()
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_body_size:
                raise RequestError(f"body: over the limit of {self.max_body_size} bytes", 413)
            chunks.append(chunk)
        return b"".join(chunks)

    async def _handle(self, endpoint: str, request, handler):
        started = time.perf_counter()
        try:
            response = await handler(request)
        except RequestError as error:
            response = _json({"error": str(error)}, error.status)
        except PredictionError as error:
            response = _json({"error": str(error)}, 422)
        except ModelLoadError as error:
            response = _json({"error": str(error)}, 503)
        self.metrics.observe(endpoint, response.status_code, time.perf_counter() - started)
        return response
