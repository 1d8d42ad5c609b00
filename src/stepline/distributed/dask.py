"""Run a step on a Dask cluster, minibatch by minibatch: stepline beyond one machine.

:class:`DaskPipeline` wraps a step (or a list of steps, made a :class:`Pipeline`). Fitting
runs here; ``transform``/``predict`` cut the data into minibatches and run them on the
cluster's workers, and the outputs come back in input order.

The step travels as a **stepline dump** — a full dump packed into an uncompressed tar in
memory, or a folder on a file system that the workers share — never as Dask's pickle of
user classes: steps that pickle cannot carry (queues, models) go through their savers,
and classes defined in ``__main__`` travel by value. Each worker unpacks and loads the
dump once, runs ``setup`` there, and keeps the step until ``teardown``. Dask is an
optional extra (``pip install stepline[dask]``), imported when this module is.
"""
from __future__ import annotations

import atexit
import contextvars
import io
import logging
import shutil
import tarfile
import tempfile
import threading
import time
import traceback
import uuid
from concurrent.futures import CancelledError
from pathlib import Path

from distributed import Client, KilledWorker, LocalCluster, get_worker, wait

from stepline.core.composite import MetaStep
from stepline.core.context import ExecutionContext
from stepline.core.mode import call_mode, current_call_mode, own_is_train
from stepline.core.data import DataContainer
from stepline.core.errors import SteplineError
from stepline.core.step import BaseTransformer
from stepline.distributed.minibatches import Progress, cut, joined
from stepline.saving.procedure import save_step

log = logging.getLogger(__name__)

_SETTLE_S = 5.0  # after a cancelled future, how long to wait for the news of a dead worker
_WATCH_S = 0.5   # with timeout_s, how often the client looks for workers gone silent
_ASK_S = 2.0     # the most the client waits for the scheduler's answer while it watches
_SILENT_S = 5.0  # beyond timeout_s, how long a worker running our task may go unheard (heartbeats: <= 1 s)

_HANDLES = ("_client", "_cluster", "_payload", "_shipped", "_owns_client", "_fit_count", "_keys")


class DaskStepError(SteplineError):
    """A step failed on a Dask worker (the message names the step, the minibatch and the
    worker's traceback), the worker running it died, or it spent longer than ``timeout_s``
    on a minibatch. ``batch_index`` is the minibatch (when known), ``worker`` the worker's
    address (when known)."""

    def __init__(self, message, batch_index=None, worker=None):
        super().__init__(message)
        self.batch_index = batch_index
        self.worker = worker

    def __reduce__(self):  # it travels from the worker: keep the attributes
        return type(self), (str(self), self.batch_index, self.worker)


class DaskTimeoutError(DaskStepError):
    """A step spent longer than ``timeout_s`` on one minibatch on a worker."""


class DaskPipeline(MetaStep):
    """Fit here, transform on a Dask cluster: ``DaskPipeline(step_or_steps, batch_size, ...)``.

    - ``address``: a scheduler to connect to (``"tcp://10.0.0.5:8786"``), saved with the step;
    - ``client``: a live ``distributed.Client`` to use instead (not saved);
    - neither: ``setup`` starts a private ``LocalCluster`` of ``n_workers`` processes on
      127.0.0.1 and ``teardown`` stops it;
    - ``shared_folder``: a folder every worker can read (NFS, a mounted bucket): the dump
      is written there once and workers load it from the path instead of receiving bytes;
    - ``show_progress``: ``True`` for a bar of minibatches done on stderr, or a callable
      ``show(done, total)``;
    - ``timeout_s``: off (``None``) by default; the most seconds the step may spend on one
      minibatch on a worker (loading and setting the step up there are not timed). Past it the call raises
      :class:`DaskTimeoutError` naming the minibatch, and the worker is restarted (its
      nanny starts a fresh one): a thread stuck in the step cannot be stopped otherwise.
    """

    def __init__(self, wrapped, batch_size: int = 1024, address: str | None = None, client=None,
                 n_workers: int | None = None, shared_folder=None, *, show_progress=False,
                 timeout_s: float | None = None, name=None, savers=None):
        if isinstance(wrapped, (list, tuple)):
            from stepline.pipeline import Pipeline
            wrapped = Pipeline(list(wrapped))
        super().__init__(wrapped, name=name, savers=savers)
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"{type(self).__name__}: batch_size must be a positive int, got {batch_size!r}")
        if address is not None and client is not None:
            raise ValueError(f"{type(self).__name__}: give address or client, not both")
        self.batch_size = batch_size
        self.address = address
        self.n_workers = n_workers
        self.shared_folder = None if shared_folder is None else str(shared_folder)
        self.show_progress = show_progress
        if timeout_s is not None and (isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float))
                                      or not timeout_s > 0):
            raise ValueError(f"{type(self).__name__}: timeout_s must be a positive number of seconds or None, "
                             f"got {timeout_s!r}")
        self.timeout_s = None if timeout_s is None else float(timeout_s)
        self.client = client

    def __getstate__(self):
        """Saving and pickling leave the cluster handles out; ``setup`` connects again."""
        state = super().__getstate__()
        for key in _HANDLES:
            state.pop(key, None)
        state["client"] = None
        return state

    # ------------------------------------------------------------- lifecycle
    def setup(self, context=None):
        """Connect to the cluster (or start a local one). The wrapped step is set up on the
        workers when they first load it, not here."""
        if self.__dict__.get("_client") is None:
            self._client, self._cluster, self._owns_client = _connect(self)
        return self

    def teardown(self):
        """Let the workers tear their copies down, then disconnect (stopping a private cluster)."""
        client, cluster = self.__dict__.get("_client"), self.__dict__.get("_cluster")
        try:
            self._forget_shipped()
        finally:
            self._client = self._cluster = None
            if client is not None and self.__dict__.get("_owns_client"):
                client.close()
            if cluster is not None:
                cluster.close()
            self.wrapped.teardown()  # if it was set up here to be fitted
        return self

    # ------------------------------------------------------------- data flow
    def handle_fit(self, data_container, context):
        """Fit the wrapped step here; the workers get the fitted step on the next transform."""
        super().handle_fit(data_container, context)
        self._fit_count = self.__dict__.get("_fit_count", 0) + 1
        return self

    def handle_fit_transform(self, data_container, context):
        """Fit here (on a copy of the container: fitting a pipeline moves its data along),
        then transform on the cluster."""
        step = self.handle_fit(data_container.copy(), context)
        return step, self.handle_transform(data_container, context)

    def handle_transform(self, data_container, context):
        batches = cut(data_container, self.batch_size, self.name)
        for attempt in (1, 2):
            try:
                return joined(data_container, self._run(batches, context))
            except DaskTimeoutError as e:
                self._restart_stuck_worker(e)
                raise
            except (KilledWorker, CancelledError, OSError) as e:  # OSError: CommClosedError is one
                lost = self._connection_lost()
                if lost is not None:
                    self._forget_shipped()  # no retry: the workers cannot be reached from here
                    raise DaskStepError(f"{self.name!r}: {lost} while running step {self.wrapped.name!r} "
                                        f"({type(e).__name__}: {e})") from e
                if isinstance(e, OSError):
                    raise
                self._forget_shipped()  # its copies may be gone with the workers: send it again
                if isinstance(e, KilledWorker) or attempt == 2:
                    raise self._died(e) from e
                log.info("%r: the cluster lost the dump of %r (%s); sending it again",
                         self.name, self.wrapped.name, e)

    def _died(self, e) -> DaskStepError:
        index = self.__dict__.get("_keys", {}).get(getattr(e, "task", None))
        on = f" on minibatch {index}" if index is not None else ""
        worker = getattr(getattr(e, "last_worker", None), "address", None)
        return DaskStepError(f"{self.name!r}: a Dask worker died while running step {self.wrapped.name!r}{on}"
                             f"{f' ({worker})' if worker else ''}, or lost the step's dump "
                             f"({type(e).__name__}: {e})", batch_index=index, worker=worker)

    def _connection_lost(self) -> str | None:
        """What happened to the client, when it can no longer reach the cluster; else ``None``."""
        client = self.__dict__.get("_client")
        status = getattr(client, "status", "running")
        if status == "running":
            return None
        if status in ("closing", "closed"):
            return "the Dask client was closed during the call"
        address = getattr(getattr(client, "scheduler", None), "address", None)
        return f"the client lost its Dask scheduler{f' at {address}' if address else ''} (it is {status})"

    def _restart_stuck_worker(self, e: DaskTimeoutError) -> None:
        """A thread stuck in the step can only be stopped with its process: restart that worker
        (first: telling it to tear its step down would wait for the stuck call), then let the
        others drop the step."""
        try:
            self._client.restart_workers([e.worker], timeout=60)
        except Exception as exc:  # no nanny, or it is gone already
            log.warning("%r: could not restart Dask worker %s, whose thread is stuck in step %r: %s",
                        self.name, e.worker, self.wrapped.name, exc)
        self._forget_shipped()

    def _run(self, batches: list, context) -> list:
        """Map the minibatches over the workers; their outputs, in order."""
        key, payload = self._ship(context)
        client = self._client
        futures = client.map(_transform_on_worker, range(len(batches)), batches, step_key=key,
                             step_name=self.wrapped.name, payload=payload, owner=self.name,
                             timeout_s=self.__dict__.get("timeout_s"),  # dumps from before it have none
                             mode=current_call_mode(), signer=_signer(), pure=False)
        self._keys = {f.key: i for i, f in enumerate(futures)}
        try:
            progress = Progress(self.show_progress, len(futures), self.name) if self.show_progress else None
            self._wait_watching_workers(futures, progress)
            return client.gather(futures)
        except CancelledError:
            # A dead worker takes the results it held with it, and gather may meet one of
            # those cancelled futures before the task that killed the worker: report that one.
            if self._connection_lost() is None:
                killed = _killed_worker_of(futures, settle_s=_SETTLE_S)
                if killed is not None:
                    raise killed from None
            raise
        finally:
            if self._connection_lost() is None:  # a closed or disconnected client cannot cancel (it raises)
                client.cancel(futures)

    def _wait_watching_workers(self, futures, progress) -> None:
        """Wait for ``futures`` (until one fails), looking every ``_WATCH_S`` at the cluster.

        A client that lost its scheduler raises :class:`DaskStepError` at once (gather would
        wait for the client's 30 s reconnection attempt). With ``timeout_s``, a worker running
        one of them that the scheduler has not heard from for ``timeout_s`` plus ``_SILENT_S``
        raises :class:`DaskTimeoutError`: the worker's own timer cannot fire in a frozen
        process (SIGSTOP, a paused VM), and the scheduler would wait ``worker-ttl`` (5 minutes)
        to drop it."""
        timeout_s = self.__dict__.get("timeout_s")
        limit = None if timeout_s is None else timeout_s + _SILENT_S
        pending, total = list(futures), len(futures)
        while pending:
            try:
                wait(pending, timeout=_WATCH_S,  # a progress display hears of each minibatch
                     return_when="FIRST_COMPLETED" if progress is not None else "ALL_COMPLETED")
            except TimeoutError:
                pass
            still = [f for f in pending if not f.done()]
            if progress is not None:
                for done in range(total - len(pending) + 1, total - len(still) + 1):
                    progress.update(done)
            if any(f.status != "finished" for f in pending if f.done()):
                return  # gather raises its error
            pending = still
            lost = self._connection_lost()
            if lost is not None:
                raise DaskStepError(f"{self.name!r}: {lost} while running step {self.wrapped.name!r} "
                                    f"({total - len(pending)} of {total} minibatches done)")
            if pending and limit is not None:
                self._raise_for_silent_worker(pending, limit)

    def _raise_for_silent_worker(self, pending, limit: float) -> None:
        keys = {f.key for f in pending}
        client = self._client
        try:  # bounded: a scheduler that just died would hold each call for the 30 s reconnection
            identity = client.sync(client.scheduler.identity, n_workers=-1, callback_timeout=_ASK_S)
            processing = client.sync(client.scheduler.processing, workers=None, callback_timeout=_ASK_S)
        except (TimeoutError, OSError):
            return  # no answer this time: the next look checks the connection again
        workers = identity.get("workers", {})
        now = time.time()
        for address, running in processing.items():
            mine = keys.intersection(running)
            last_seen = workers.get(address, {}).get("last_seen")
            if mine and last_seen is not None and now - last_seen > limit:
                index = min(self._keys[k] for k in mine)
                raise DaskTimeoutError(
                    f"{self.name!r}: Dask worker {address} has not been heard from for {now - last_seen:.1f} s "
                    f"while running step {self.wrapped.name!r} on minibatch {index}, over timeout_s="
                    f"{self.timeout_s:g} s + {_SILENT_S:g} s (frozen or unreachable); the worker is restarted",
                    batch_index=index, worker=address)

    # ------------------------------------------------------------- shipping
    def _ship(self, context) -> tuple[str, object]:
        """The key and payload (a future of the dump's bytes, or a shared path) of the
        current wrapped step, dumping and sending it if it changed since it was last sent."""
        if not self.is_initialized:
            self.setup(context)
        version = (id(self.wrapped), self.__dict__.get("_fit_count", 0), _state_of(self.wrapped))
        shipped = self.__dict__.get("_shipped")
        if shipped is not None and shipped[0] == version:
            return shipped[1], self._payload
        self._forget_shipped()
        start = time.perf_counter()
        key = f"{self.wrapped.name}-{uuid.uuid4().hex[:12]}"
        if self.shared_folder:
            folder = Path(self.shared_folder) / key
            save_step(self.wrapped, ExecutionContext(folder), full_dump=True, mark_saved=False)
            payload, size = str(folder), None
        else:
            data = dump_bytes(self.wrapped)
            payload, size = self._client.scatter(data, broadcast=True, hash=False), len(data)
        self._payload, self._shipped = payload, (version, key)
        log.info("%r: shipped step %r to the cluster (%s) in %.2f s", self.name, self.wrapped.name,
                 f"{size / 1e6:.1f} MB dump" if size is not None else f"dump at {payload}",
                 time.perf_counter() - start)
        return key, payload

    def _forget_shipped(self) -> None:
        shipped, payload = self.__dict__.get("_shipped"), self.__dict__.get("_payload")
        self._shipped = self._payload = None
        client = self.__dict__.get("_client")
        if shipped is None or client is None:
            return
        lost = self._connection_lost()
        if lost is not None:  # client.run would wait for the client's reconnection timeout
            log.warning("%r: could not tell the workers to drop step %r: %s", self.name, shipped[1], lost)
        else:
            try:
                client.run(_forget_on_worker, shipped[1])
            except Exception as e:  # a worker that is gone has forgotten it already
                log.warning("%r: could not tell every worker to drop step %r: %s", self.name, shipped[1], e)
        if isinstance(payload, str):
            shutil.rmtree(payload, ignore_errors=True)


def _killed_worker_of(futures, settle_s: float):
    """The ``KilledWorker`` of the first of ``futures`` that failed with one, or ``None``,
    after waiting at most ``settle_s`` for the others to finish (their news may come later)."""
    try:
        wait(futures, timeout=settle_s)
    except Exception:  # some are still running (or the client is closing): look at what is known
        pass
    for future in futures:
        if future.status == "error":
            exc = future.exception()
            if isinstance(exc, KilledWorker):
                return exc
    return None


def _connect(step: DaskPipeline):
    """``(client, private cluster or None, whether the client is ours to close)``."""
    if step.client is not None:
        return step.client, None, False
    if step.address is not None:
        return Client(step.address), None, True
    cluster = LocalCluster(n_workers=step.n_workers, threads_per_worker=1, processes=True,
                           host="127.0.0.1", dashboard_address=":0", silence_logs=logging.WARNING)
    try:
        return Client(cluster), cluster, True
    except BaseException:
        cluster.close()
        raise


def _state_of(step) -> str:
    """What a change to the step without replacing it would alter: hyperparameters, stored
    modes (not a call's mode, e.g. ``predict``'s: that travels with each minibatch)."""
    nodes = step.apply(lambda s, cx: (id(s), own_is_train(s)))
    return repr((sorted(nodes.items()), sorted(step.get_hyperparams().items())))


def dump_bytes(step: BaseTransformer) -> bytes:
    """A full dump of ``step`` packed into an uncompressed tar, as bytes."""
    with tempfile.TemporaryDirectory(prefix="stepline-dask-") as folder:
        save_step(step, ExecutionContext(folder), full_dump=True, mark_saved=False)
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            tar.add(Path(folder) / step.name, arcname=step.name)
        return buffer.getvalue()


def load_bytes(data: bytes, name: str, folder) -> BaseTransformer:
    """Unpack :func:`dump_bytes` into ``folder`` and load the step from it (not set up)."""
    with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(folder, filter="data")  # refuses absolute paths, links out, devices
        else:  # Python < 3.10.12 / 3.11.4: allow plain files and folders inside ``folder`` only
            for member in tar.getmembers():
                if not (member.isfile() or member.isdir()) or member.name.startswith("/") \
                        or ".." in Path(member.name).parts:
                    raise ValueError(f"not a stepline dump: tar member {member.name!r}")
            tar.extractall(folder)
    return ExecutionContext(folder).load(name)


# ------------------------------------------------------------------ worker side
_LOADED: dict[str, tuple] = {}
_LOADED_LOCK = threading.Lock()
# Keys their client tore down: a minibatch still running or rescheduled here (its future
# cancelled too late to stop it) must not load the step again after the teardown.
_FORGOTTEN: set[str] = set()


def _signer() -> str:
    """The public key the dumps this process saves are signed with (DESIGN §5a)."""
    from stepline.trust.keys import local_public_key_hex
    return local_public_key_hex()


def _step_on_worker(key: str, name: str, payload, signer: str | None = None):
    """The step of ``key`` on this worker: loaded and set up on first use, then kept.

    The dump is verified against ``signer``, the client's public key, sent over the channel
    that already carries the client's code: a worker on another machine trusts what the
    client saved, and nothing else. A dump that came as bytes is unpacked under the worker's
    local directory, which Dask removes when the worker closes, and purges when a worker
    died (its nanny's next worker does it), so a killed worker leaves no dump behind.
    """
    from stepline.trust.store import trusting_keys
    with _LOADED_LOCK, trusting_keys([signer] if signer else []):
        entry = _LOADED.get(key)
        if entry is None:
            if key in _FORGOTTEN:
                raise CancelledError(f"step {key!r} was torn down by its client")
            if not _LOADED:
                atexit.register(_forget_all_on_worker)
            if isinstance(payload, str):
                folder, step = None, ExecutionContext(payload).load(name)
            else:
                folder = tempfile.mkdtemp(prefix="stepline-dask-", dir=_worker_directory())
                step = load_bytes(payload, name, folder)
            context = ExecutionContext(folder or payload)
            step.setup(context)
            entry = _LOADED[key] = (step, folder, context)
        return entry


def _worker_directory():
    """This Dask worker's local directory (``None``: the system's temporary folder)."""
    try:
        return get_worker().local_directory
    except ValueError:  # not in a worker (a test calling the function directly)
        return None


def _transform_on_worker(index: int, batch, *, step_key: str, step_name: str, payload, owner: str,
                         timeout_s=None, mode=None, signer: str | None = None):
    """Transform minibatch ``index`` in the call's ``mode`` (see :mod:`stepline.core.mode`)."""
    with call_mode(mode):
        if timeout_s is None:
            return _run_minibatch(index, batch, step_key, step_name, payload, owner, signer=signer)
        return _with_timeout(index, batch, step_key, step_name, payload, owner, timeout_s, signer=signer)


def _run_minibatch(index, batch, step_key, step_name, payload, owner, loaded=None, signer=None):
    data_inputs, expected_outputs = batch
    try:
        step, _, context = _step_on_worker(step_key, step_name, payload, signer)
    except CancelledError:
        raise
    except Exception as e:
        source = f"the shared folder {payload}" if isinstance(payload, str) else "the dump its client sent"
        raise DaskStepError(f"{owner!r}: the Dask worker {_worker_address()} could not load step {step_name!r} "
                            f"(for minibatch {index}) from {source}, or set it up: {type(e).__name__}: {e}\n"
                            f"worker traceback:\n{traceback.format_exc()}",
                            batch_index=index, worker=_worker_address()) from None
    if loaded is not None:
        loaded.set()
    try:
        container = step.handle_transform(DataContainer(data_inputs, expected_outputs), context)
        return container.data_inputs, container.expected_outputs
    except Exception as e:
        raise DaskStepError(f"{owner!r}: step {step_name!r} failed on minibatch {index} on a Dask worker: "
                            f"{type(e).__name__}: {e}\nworker traceback:\n{traceback.format_exc()}",
                            batch_index=index, worker=_worker_address()) from None


def _with_timeout(index, batch, step_key, step_name, payload, owner, timeout_s, signer=None):
    """Run the minibatch in a thread of its own; give up on it ``timeout_s`` after the step
    started on it (loading and setting up the step on first use are not timed: imports and
    models can take long)."""
    loaded, done, outcome = threading.Event(), threading.Event(), {}

    def run():
        try:
            outcome["value"] = _run_minibatch(index, batch, step_key, step_name, payload, owner, loaded,
                                              signer)
        except BaseException as e:
            outcome["error"] = e
        finally:
            loaded.set()
            done.set()

    threading.Thread(target=contextvars.copy_context().run, args=(run,),  # the call's mode too
                     name=f"stepline-dask:{step_name}#{index}", daemon=True).start()
    loaded.wait()
    if not done.wait(timeout_s):
        raise DaskTimeoutError(f"{owner!r}: step {step_name!r} spent more than timeout_s={timeout_s:g} s "
                               f"on minibatch {index} on Dask worker {_worker_address()}; the worker is "
                               f"restarted (its thread cannot be stopped)", batch_index=index,
                               worker=_worker_address())
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _worker_address():
    try:
        return get_worker().address
    except ValueError:
        return None


def _forget_on_worker(key: str) -> bool:
    """Tear down and drop the step of ``key`` on this worker; whether it was there."""
    with _LOADED_LOCK:
        entry = _LOADED.pop(key, None)
        _FORGOTTEN.add(key)
    if entry is None:
        return False
    step, folder, _ = entry
    try:
        step.teardown()
    finally:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
    return True


def _forget_all_on_worker() -> None:
    for key in list(_LOADED):
        _forget_on_worker(key)


def loaded_on_worker() -> list[str]:
    """The keys of the steps this worker holds (``client.run(loaded_on_worker)``)."""
    with _LOADED_LOCK:
        return sorted(_LOADED)


__all__ = ["DaskPipeline", "DaskStepError", "DaskTimeoutError", "dump_bytes", "load_bytes", "loaded_on_worker"]
