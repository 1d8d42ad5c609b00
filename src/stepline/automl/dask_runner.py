"""Trials on a Dask cluster (``AutoML(client=...)``): one task a trial, pruned live.

- **The pipeline travels once.** The driver packs the dump it saved (no second save) into a
  tar and registers it, with the data, as a worker plugin (:class:`SearchPayload`): the
  scheduler installs it on every worker, and on a worker that joins later (a dead one's
  replacement) before that worker runs any task. The trials do not depend on it (a
  dependency would make the scheduler run them where it lives). A worker loads the
  pipeline on its first trial and keeps it under the dump's root digest until the search
  ends and the plugin is unregistered. (Keeping it longer would not help a later search:
  each search saves its own dump, and a manifest records when it was written, so the
  digest differs.)
- **Small tasks, no idle worker.** A trial is a task of a few small arguments
  (``pure=False``; its result a plain tuple); :attr:`DaskRunner.ahead` tells the loop to
  keep one trial queued on each worker beyond the cluster's threads, so that a worker
  finishing a trial starts its next one at once instead of waiting for the round trip
  result → driver → tell → ask → submit. Completions and epochs reach the driver through
  callbacks into one local queue, so the driver sleeps until something happens (no
  polling); the cluster's threads are recounted in the client's event loop, not between a
  result and the next submit.
- **Live pruning.** An epoch's score goes to the driver as a Dask event (``log_event``,
  fire-and-forget: the training never waits for the driver); the driver alone reports it
  to the study and asks the pruner. To stop a trial it marks ``(search, trial)`` on the
  worker running it (``client.run`` on that worker), which the trial reads at its next
  epoch — one local set lookup an epoch, no round trip. Epochs that had not reached the
  driver when the trial ended come with its result and are recorded then. A study whose
  pruner is Optuna's ``NopPruner`` gets its epochs with the results only (no events), and a
  trial that reports no epoch never looks its worker up.
- **Quiet workers.** While the search runs, each worker's statistical profiler and
  event-loop tick monitor are paused (:mod:`.dask_quiet`: their ~150 wake-ups a second took
  CPU from the trials on a small machine).
"""
from __future__ import annotations

import io
import logging
import queue
import shutil
import tarfile
import tempfile
import threading
import time
import uuid
from pathlib import Path

import cloudpickle
from distributed.diagnostics.plugin import WorkerPlugin  # (this module is imported for a Dask search only)

from stepline.automl import dask_quiet
from stepline.automl.trials import FAIL, PRUNED, TrialData, TrialResult, run_trial

log = logging.getLogger(__name__)

_BACKSTOP_S = 5.0  # how often the driver also looks at the futures themselves
_RECOUNT_S = 1.0  # seconds between two counts of the cluster's threads while trials succeed
_AHEAD_A_WORKER = 1  # trials queued on each worker beyond its threads (what Dask's default
# worker-saturation, 1.1, sends a worker of up to 9 threads)

# ------------------------------------------------------------------ on a worker

_TEMPLATES: dict = {}  # root digest -> (template, folder)
_PAYLOADS: dict = {}  # search key -> the packed dump and data, as the driver pushed them
_DATA: dict = {}  # search key -> TrialData
_PRUNE: set = set()  # (search key, trial number) the driver pruned
_TO_QUIET: set = set()  # search keys whose first trial on this worker pauses its monitors
_LOCK = threading.Lock()


def _dask_trial(search: tuple, number: int, params: dict) -> tuple:
    """On a Dask worker: run trial ``number`` of ``search``, the tuple of :attr:`DaskRunner.search`
    (key, root digest, name, signer, live). The dump is verified against ``signer``,
    the client's public key (DESIGN §5a). Returns :meth:`TrialResult.as_tuple`."""
    key, digest, name, signer, live = search
    template, data = _prepared(key, digest, name, signer)
    return run_trial(template, number, params, data, _LiveReporter(key, number) if live else None).as_tuple()


def _prepared(key: str, digest: str, name: str, signer):
    """The loaded pipeline and the data of search ``key`` on this worker (loaded on its first trial)."""
    entry, data = _TEMPLATES.get(digest), _DATA.get(key)
    if entry is not None and data is not None:  # every trial but a worker's first: no lock
        return entry[0], data
    with _LOCK:
        if digest not in _TEMPLATES or key not in _DATA:
            blob = _PAYLOADS.get(key)
            if blob is None:  # never seen: the plugin is installed before a worker runs any task
                raise RuntimeError(f"stepline.automl: the pipeline and data of search {key} never reached "
                                   f"this worker (its plugin {key!r} was not installed)")
            if key in _TO_QUIET:  # the worker's first trial of the search
                _TO_QUIET.discard(key)
                from distributed import get_worker
                dask_quiet.quiet_from_a_task(get_worker(), key)
            dump, data_blob = cloudpickle.loads(blob)
            if digest not in _TEMPLATES:
                _TEMPLATES[digest] = _load(dump, name, signer)
            if key not in _DATA:
                _DATA[key] = cloudpickle.loads(data_blob)
            _PAYLOADS.pop(key, None)
        return _TEMPLATES[digest][0], _DATA[key]


def _load(dump: bytes, name: str, signer):
    """Unpack ``dump`` under the worker's local directory (Dask removes it with the worker)."""
    from stepline.distributed.dask import load_bytes
    from stepline.trust.store import trusting_keys
    folder = tempfile.mkdtemp(prefix="stepline-automl-", dir=_worker_directory())
    with trusting_keys([signer] if signer else []):
        return load_bytes(dump, name, folder), folder


def _worker_directory():
    from distributed import get_worker
    try:
        return get_worker().local_directory
    except ValueError:  # not on a worker
        return None


class _LiveReporter:
    """``report(step, value)``: send the epoch to the driver; True once the driver pruned the trial.
    Looks its worker up at the first epoch only: a trial that reports none costs nothing."""

    def __init__(self, key: str, number: int):
        self.key, self.number, self.worker = key, number, None

    def __call__(self, step: int, value: float) -> bool:
        if self.worker is None:
            from distributed import get_worker
            self.worker = get_worker()
        self.worker.log_event(_topic(self.key), [self.number, step, value, self.worker.address])
        return (self.key, self.number) in _PRUNE


class SearchPayload(WorkerPlugin):
    """A Dask worker plugin holding a search's packed dump and data: the scheduler installs it
    on every worker, and on every worker that joins later (a dead one's replacement) before
    that worker runs a task; unregistering it makes every worker forget the search. ``quiet``:
    pause the worker's profiler and tick monitor meanwhile (:mod:`.dask_quiet`)."""

    def __init__(self, key: str, digest: str, blob: bytes, quiet: bool = True):
        self.key, self.digest, self.blob, self.quiet = key, digest, blob, quiet

    def setup(self, worker) -> None:
        _PAYLOADS[self.key], self.blob = self.blob, None  # (the scheduler keeps it for later workers)
        if self.quiet:  # at the first trial: a joining worker starts its callbacks after this
            _TO_QUIET.add(self.key)

    def teardown(self, worker) -> None:
        _TO_QUIET.discard(self.key)
        dask_quiet.resume(worker, self.key)
        _forget_on_worker(self.key, self.digest)


def _prune_on_worker(key: str, number: int) -> None:
    _PRUNE.add((key, number))


def _forget_on_worker(key: str, digest: str) -> None:
    """The search ``key`` on dump ``digest`` ended: drop its pipeline, data and marks."""
    with _LOCK:
        _PAYLOADS.pop(key, None)
        _DATA.pop(key, None)
        for mark in [m for m in _PRUNE if m[0] == key]:
            _PRUNE.discard(mark)
        entry = _TEMPLATES.pop(digest, None)
    if entry is not None:
        shutil.rmtree(entry[1], ignore_errors=True)


def _topic(key: str) -> str:
    return f"{key}-epochs"


# ------------------------------------------------------------------ in the driver

def pack_dump(folder: Path, name: str) -> bytes:
    """The dump ``folder/name`` as the bytes of an uncompressed tar (what ``load_bytes`` reads)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(Path(folder) / name, arcname=name)
    return buffer.getvalue()


def idle_threads(processing: dict, threads: dict, in_flight: set) -> int:
    """Threads of the cluster left idle once the scheduler has placed every trial of
    ``in_flight`` (their keys) that it has not placed yet. ``processing``: the scheduler's
    ``{worker: keys it runs or holds}``; ``threads``: ``{worker: threads}``. A trial just
    submitted may be on no worker yet when the scheduler is asked: it takes a free thread
    first, so counting that thread as idle queued one more trial behind a busy worker while
    another worker went idle for a whole trial at the end of the search."""
    placed = sum(1 for keys in processing.values() for key in keys if key in in_flight)
    free = sum(max(0, threads.get(worker, 0) - len(keys)) for worker, keys in processing.items())
    return free - (len(in_flight) - placed)


class DaskRunner:
    """Runs trials on the workers of a ``distributed.Client``: as many at once as the cluster
    has threads, and :attr:`ahead` more queued. ``live``: send epochs to the driver as they
    come (False when the study's pruner never prunes: the epochs come with the result).
    ``quiet``: pause the workers' profiler and tick monitor while the search runs (:mod:`.dask_quiet`)."""

    def __init__(self, folder: Path, name: str, data: TrialData, client, live: bool = True, quiet: bool = True):
        from stepline.saving.manifest import root_digest
        from stepline.trust.keys import local_public_key_hex
        self.client, self.name, self.key = client, name, f"stepline-automl-{uuid.uuid4().hex}"
        self.digest = root_digest(Path(folder) / name)
        blob = cloudpickle.dumps((pack_dump(folder, name), cloudpickle.dumps(data)))
        # a worker plugin, not a task's result or scattered data: the trials do not depend on
        # it (a dependency makes the scheduler run them where it lives), and a worker that
        # joins later gets it when it registers (a task's result lost with its worker had to
        # be computed again, and a replacement worker waiting for it hung the search)
        client.register_plugin(SearchPayload(self.key, self.digest, blob, quiet), name=self.key)
        self._set_capacity(client.nthreads())
        signer = local_public_key_hex()  # the dump was signed with this key when saved
        # what every trial task takes besides its number and values: a few short strings
        self.search = (self.key, self.digest, name, signer, live)
        self.futures: dict = {}  # future -> trial number
        self.numbers: dict = {}  # trial number -> future
        self.live_steps: dict = {}  # trial number -> the last step reported live
        self.pruned: set = set()
        self.events: queue.Queue = queue.Queue()  # ("done", future) | ("epoch", [number, step, value, address])
        self.live = live
        if live:
            client.subscribe_topic(_topic(self.key), self._on_epoch)

    def _set_capacity(self, threads: dict) -> None:
        """``threads``: the workers' addresses -> their threads. ``capacity`` trials run at once;
        one more is queued for each worker (``ahead``)."""
        self.threads = dict(threads)
        self.capacity, self.ahead = max(1, sum(threads.values())), max(1, len(threads)) * _AHEAD_A_WORKER
        self.counted_at = time.monotonic()

    def has_idle_thread(self) -> bool:
        """Whether a thread stays idle once the scheduler has placed this search's trials
        (a round trip to the scheduler: asked at the end of a search only, see
        ``SearchLoop._room``)."""
        try:
            processing = self.client.processing()
        except Exception as error:  # noqa: BLE001 - then wait for the next result
            log.debug("stepline.automl: could not ask the scheduler what runs: %s", error)
            return False
        return idle_threads(processing, self.threads, {future.key for future in self.futures}) > 0

    def _on_epoch(self, event) -> None:  # in the client's event loop
        self.events.put(("epoch", event[1]))

    def submit(self, number: int, params: dict) -> None:
        future = self.client.submit(_dask_trial, self.search, number, params, pure=False,
                                    key=f"{self.key}-{number}")
        self.futures[future], self.numbers[number] = number, future
        future.add_done_callback(self._on_done)

    def _on_done(self, future) -> None:  # in the client's event loop
        self.events.put(("done", future))

    def wait(self, report) -> list:
        """Handle epochs as they come until a trial ends; return it (told before later epochs
        are handled, so the pruner judges them against it)."""
        while True:
            try:
                kind, item = self.events.get(timeout=_BACKSTOP_S)
            except queue.Empty:  # never seen, but a lost callback must not hang the search
                kind, item = next((("done", f) for f in self.futures if f.done()), ("idle", None))
            if kind == "epoch":
                self._epoch(report, *item)
            elif item in self.futures:
                return [self._result(item, report)]

    def _epoch(self, report, number: int, step: int, value: float, address: str) -> None:
        if number not in self.numbers or number in self.pruned:
            return  # a trial already told, or pruned: its later epochs are not recorded
        self.live_steps[number] = step
        if report(number, step, value):
            self.pruned.add(number)
            try:
                self.client.run(_prune_on_worker, self.key, number, workers=[address])
            except Exception as error:  # noqa: BLE001 - the worker went away: the trial fails anyway
                log.warning("stepline.automl: could not stop trial %d on %s: %s", number, address, error)

    def _result(self, future, report) -> TrialResult:
        number = self.futures.pop(future)
        del self.numbers[number]
        try:
            result = TrialResult.from_tuple(future.result())
        except Exception as error:  # noqa: BLE001 - a killed worker or a lost task fails the trial
            result = TrialResult(number, FAIL, error=f"{type(error).__name__}: {error}")
        if number in self.pruned:
            if result.state != FAIL:  # it ended before it read the driver's decision
                result = TrialResult(number, PRUNED, seconds=result.seconds, started_at=result.started_at,
                                     worker=result.worker, cpu_seconds=result.cpu_seconds)
        else:  # epochs still on their way when the trial ended
            last = self.live_steps.get(number, 0)
            for step, value in result.reports:
                if step > last:
                    report(number, step, value, live=False)
        self.live_steps.pop(number, None)
        self.pruned.discard(number)
        if result.state == FAIL:  # a worker may have died: count again before the next submit
            self._count_threads()
        elif time.monotonic() - self.counted_at > _RECOUNT_S:  # workers may have joined or left
            self.counted_at = time.monotonic()
            self.client.loop.add_callback(self._count_threads_in_the_background)
        return result

    def _count_threads(self) -> None:
        """Workers join, leave and come back (a nanny restarts a dead one): count them again
        (a round trip to the scheduler, in the driver's thread: only after a failed trial)."""
        try:
            self._set_capacity(self.client.nthreads())
        except Exception as error:  # noqa: BLE001 - keep the last count
            log.debug("stepline.automl: could not count the Dask threads: %s", error)

    async def _count_threads_in_the_background(self) -> None:
        """The same count in the client's event loop, while trials succeed: the driver never
        waits for it (it was a round trip between a result and the next submit)."""
        try:
            self._set_capacity(await self.client.scheduler.ncores())
        except Exception as error:  # noqa: BLE001 - keep the last count
            log.debug("stepline.automl: could not count the Dask threads: %s", error)

    def close(self) -> None:
        if self.futures:
            self.client.cancel(list(self.futures))
        try:
            if self.live:
                self.client.unsubscribe_topic(_topic(self.key))
            self.client.unregister_worker_plugin(self.key)  # each worker forgets the search
        except Exception as error:  # noqa: BLE001 - a cluster going away must not hide the search's result
            log.warning("stepline.automl: could not clean the Dask workers: %s", error)
        self.futures, self.numbers = {}, {}
