"""stepline.automl against plain Optuna: per-trial overhead, and the speedup of 2 workers.

1. **Overhead.** The same objective, the same sampler (``RandomSampler(seed=0)``) and the
   same storage (in memory, then an SQLite file), ``--trials`` trials:

   - plain Optuna: ``study.optimize(objective)`` where ``objective`` suggests two values
     and scores them with a closed form (no model: only the framework is timed);
   - stepline: ``AutoML(pipeline, cv=0.5, ...)`` on a pipeline of one step whose ``fit``
     stores its two hyperparameters and whose score is the same closed form — so each
     trial also maps the space, copies the loaded pipeline, sets its hyperparameters, fits
     it through the scikit-learn adapter and calls the scorer.

   The SQLite file lives on ``/dev/shm`` (a RAM disk) by default: on a shared machine the
   disk's fsyncs vary by tens of ms a commit and drown what is measured (``--sqlite-dir``
   puts it on a disk). Plain and stepline searches alternate within each repeat.
   Printed: seconds a trial for each (a search's wall time over its trials, so the fixed
   cost of a search — stepline saves and loads the pipeline once and resolves the splits,
   Optuna creates the study — is spread over them), and what stepline adds a trial
   (target < 5 ms): the median of the paired differences.

2. **Speedup.** A CPU-bound step (a fixed pure-Python loop of ``--work`` iterations in
   ``fit``: every trial costs the same), ``--par-trials`` trials from the same seeded
   sampler, run sequentially (``n_jobs=1``), in 2 worker processes (``n_jobs=2``) and on a
   2-worker ``LocalCluster`` (1 thread each; the cluster starts before the clock does).
   The parallel times include starting the worker processes (forked by the fork server)
   and shipping the dump; the first search of a process, which also starts the fork server
   (a fresh interpreter importing stepline and scikit-learn) and makes the cluster's
   workers import them, is timed apart. Target ≥ 1.8× on 2 cores.
   Peers in the same run: plain Optuna's ask/tell with the same loop as a plain function,
   2 trials in flight, sequentially, on a ``ProcessPoolExecutor(2)`` started inside the
   clock, and on the same LocalCluster — what 2 workers give on this machine with no
   framework. In every repeat, stepline and its peer run back to back in each mode (their
   order alternating between repeats), both warmed up on the cluster before the clock, so
   that a change of the machine's load hits both. Printed with each row: the speedup of the
   medians and of the best repeats, where the workers' time went (stepline's
   ``AutoML.timeline_``, the peer's trials' own start and end): the share spent in trials,
   and the idle ms a worker before its first trial, between its trials and after its last
   one — what the framework costs beyond the trials, which the machine's load does not hide
   the way it hides the speedup — and, for stepline's rows, the median over the repeats of
   stepline's wall time over its peer's, run back to back.
   On the cluster, stepline runs also with ``quiet_dask_workers=False`` (the workers'
   profiler and tick monitor left running, as Dask starts them), and the peer also on
   workers paused as a stepline search pauses them; each is paired with the other. "beyond":
   the CPU this process and all its descendants used beyond the trials' own threads (their
   thread CPU: ``timeline_``'s ``cpu``, the peer's trials'), in ms a second of the search's
   wall time — what the framework and the cluster take from the trials' cores, which the
   machine's load moves much less than it moves wall times.

Medians over ``--repeats``. The machine's load is printed with the results: on a loaded
machine, both parts are noisy and the speedup is bounded by the cores actually free.

    python benchmarks/bench_automl.py [--trials 300] [--sqlite-trials 60] [--par-trials 12]
                                      [--work 10000000] [--repeats 5] [--sqlite-dir DIR]
                                      [--skip-overhead] [--skip-speedup]
"""
from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core per worker, for a fair speedup

from stepline.automl import AutoML  # noqa: E402
from stepline.base import BaseStep  # noqa: E402
from stepline.hyperparams.distributions import RandInt, Uniform  # noqa: E402
from stepline.pipeline import Pipeline  # noqa: E402


def closed_form(x: float, k: int) -> float:
    return -((x - 0.3) ** 2) - 0.01 * (k - 7) ** 2


class Quadratic(BaseStep):
    """Remembers its two hyperparameters; the scorer reads them (no model, no data work)."""

    def __init__(self):
        super().__init__(hyperparams={"x": 0.0, "k": 1},
                         hyperparams_space={"x": Uniform(-1.0, 1.0), "k": RandInt(1, 20)})

    def fit(self, data_inputs, expected_outputs=None):
        self.fitted_ = (self.hyperparams["x"], self.hyperparams["k"])
        return self

    def transform(self, data_inputs):
        return data_inputs


class Burn(BaseStep):
    """Burns a fixed amount of CPU in ``fit`` (a pure-Python loop), whatever its values."""

    def __init__(self, work: int):
        super().__init__(hyperparams={"x": 0.0}, hyperparams_space={"x": Uniform(-1.0, 1.0)})
        self.work = work

    def fit(self, data_inputs, expected_outputs=None):
        total = 0
        for i in range(self.work):
            total += i * i
        self.total_ = total
        return self

    def transform(self, data_inputs):
        return data_inputs


def quadratic_score(estimator, X, y) -> float:
    x, k = estimator.step["Quadratic"].fitted_
    return closed_form(x, k)


def burn_score(estimator, X, y) -> float:
    return -abs(estimator.step["Burn"].hyperparams["x"])


def plain_objective(trial) -> float:
    return closed_form(trial.suggest_float("Quadratic__x", -1.0, 1.0), trial.suggest_int("Quadratic__k", 1, 20))


# ------------------------------------------------------------------ overhead

def time_plain(optuna, storage, trials: int, name=None) -> float:
    study = optuna.create_study(storage=storage, study_name=name, direction="maximize",
                                sampler=optuna.samplers.RandomSampler(seed=0))
    start = time.perf_counter()
    study.optimize(plain_objective, n_trials=trials)
    return (time.perf_counter() - start) / trials


def time_stepline(storage, trials: int, X, y, name=None) -> float:
    search = AutoML(Pipeline([Quadratic()]), scoring=quadratic_score, cv=0.5, n_trials=trials,
                    sampler="random", seed=0, storage=storage, study_name=name, refit=False,
                    show_progress=False)
    start = time.perf_counter()
    search.fit(X, y)
    return (time.perf_counter() - start) / trials


def overhead(optuna, trials: int, sqlite_trials: int, repeats: int, sqlite_dir: str | None) -> None:
    """Seconds a trial (a search's wall time over its trials, the search's fixed cost
    included), plain and stepline alternating within every repeat so that a change of the
    machine's load hits both; what stepline adds is the median of the paired differences."""
    X, y = np.zeros((20, 1)), np.zeros(20)
    time_plain(optuna, None, 3)  # imports and first-call costs out of the way
    time_stepline(None, 3, X, y)
    print(f"\n1. per-trial overhead (RandomSampler, a closed-form objective; median of {repeats} paired runs)")
    print(f"  {'storage':<10} {'plain Optuna':>14} {'stepline':>12} {'stepline adds':>15}")
    for label, n in (("in memory", trials), ("SQLite", sqlite_trials)):
        with tempfile.TemporaryDirectory(dir=sqlite_dir) as folder:
            # one SQLite file (its schema created once, outside the clock), a new study a search
            url = None if label == "in memory" else f"sqlite:///{Path(folder) / 'bench.db'}"
            if url is not None:
                optuna.create_study(storage=url, study_name="schema")
            plain, ours = [], []
            for i in range(repeats):
                plain.append(time_plain(optuna, url, n, f"plain-{i}"))
                ours.append(time_stepline(url, n, X, y, f"stepline-{i}"))
        adds = statistics.median(b - a for a, b in zip(plain, ours))
        print(f"  {label:<10} {statistics.median(plain) * 1e3:11.2f} ms {statistics.median(ours) * 1e3:9.2f} ms "
              f"{adds * 1e3:12.2f} ms   ({n} trials a search)")
    print(f"  (SQLite file in {sqlite_dir or tempfile.gettempdir()}; --sqlite-dir DIR puts it elsewhere)")


# ------------------------------------------------------------------ speedup

def time_search(work: int, trials: int, X, y, where: list | None = None, **kwargs) -> float:
    """Wall seconds of a search; appends to ``where`` where its time went (:func:`where_time_went`)."""
    search = AutoML(Pipeline([Burn(work)]), scoring=burn_score, cv=0.5, n_trials=trials, sampler="random",
                    seed=0, refit=False, show_progress=False, **kwargs)
    start = time.time()
    search.fit(X, y)
    elapsed = time.time() - start
    done = search.study_.trials
    assert len(done) == trials and all(t.state.name == "COMPLETE" for t in done)
    if where is not None:
        where.append(where_time_went(search.timeline_, start, elapsed))
    return elapsed


def where_time_went(timeline: list, start: float, wall: float) -> dict:
    """From the trials' times on their workers (``AutoML.timeline_``): the share of the workers'
    time spent in trials (``busy``: 1.0 = never idle), and the idle time beyond the trials —
    before each worker's first trial (``first``: shipping the dump, starting and loading),
    between a worker's trials (``gaps``: result → driver → tell → ask → submit → worker),
    and after its last one until ``fit`` returned (``tail``: the other worker's last trial,
    closing) — in ms a worker, averaged over the workers."""
    by_worker: dict = {}
    for entry in timeline:
        by_worker.setdefault(entry["worker"], []).append(entry)
    first = gaps = tail = busy = 0.0
    cpu = sum(entry.get("cpu") or 0.0 for entry in timeline)  # the trials' own threads' CPU
    for entries in by_worker.values():
        entries.sort(key=lambda e: e["started"])
        first += entries[0]["started"] - start
        gaps += sum(b["started"] - a["ended"] for a, b in zip(entries, entries[1:]))
        tail += start + wall - entries[-1]["ended"]
        busy += sum(e["ended"] - e["started"] for e in entries)
    n = len(by_worker)
    return {"busy": busy / (n * wall), "first": first / n, "gaps": gaps / n, "tail": tail / n, "cpu": cpu,
            "wall": wall}


def burn_trial(x: float, work: int) -> tuple:
    """The peers' trial: the same pure-Python loop as :class:`Burn`, then the same score; with
    where and when it ran (as ``AutoML.timeline_`` says it for stepline's trials)."""
    started, cpu = time.time(), time.thread_time()
    total = 0
    for i in range(work):
        total += i * i
    return -abs(x), {"worker": f"{os.uname().nodename}:{os.getpid()}", "started": started, "ended": time.time(),
                     "cpu": time.thread_time() - cpu}


def time_plain_parallel(optuna, trials: int, work: int, submit_to, where: list | None = None) -> float:
    """Wall seconds of plain Optuna ask/tell with 2 trials in flight on ``submit_to``
    (``None``: sequential; a ``concurrent.futures`` executor or a Dask client); appends to
    ``where`` where its time went."""
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    timeline: list = []
    start = time.time()
    if submit_to is None:
        for _ in range(trials):
            trial = study.ask()
            value, entry = burn_trial(trial.suggest_float("x", -1.0, 1.0), work)
            study.tell(trial, value)
            timeline.append(entry)
    else:
        pending: dict = {}

        def ask_and_submit():
            trial = study.ask()
            pending[submit_to.submit(burn_trial, trial.suggest_float("x", -1.0, 1.0), work)] = trial

        for _ in range(min(2, trials)):
            ask_and_submit()
        told = 0
        while pending:
            for future in _first_done(list(pending)):
                value, entry = future.result()
                study.tell(pending.pop(future), value)
                timeline.append(entry)
                told += 1
                if told + len(pending) < trials:
                    ask_and_submit()
    elapsed = time.time() - start
    if where is not None:
        where.append(where_time_went(timeline, start, elapsed))
    return elapsed


def _first_done(futures: list) -> list:
    """The futures (``concurrent.futures`` or Dask) done, waiting for the first one."""
    import concurrent.futures
    if isinstance(futures[0], concurrent.futures.Future):
        return list(concurrent.futures.wait(futures, return_when=concurrent.futures.FIRST_COMPLETED).done)
    import distributed
    return list(distributed.wait(futures, return_when="FIRST_COMPLETED").done)


def time_plain_processes(optuna, trials: int, work: int, where: list) -> float:
    """Plain ask/tell on a ``ProcessPoolExecutor(2)`` started inside the clock, as stepline's workers."""
    import concurrent.futures
    start = time.time()
    with concurrent.futures.ProcessPoolExecutor(2) as pool:
        time_plain_parallel(optuna, trials, work, pool, where)
    return time.time() - start  # (its idle ms: from the pool's creation to the last tell)


def tree_cpu() -> float:
    """CPU seconds used so far by this process and all its descendants (the LocalCluster's
    workers, the fork server and its worker processes), those already reaped included."""
    import psutil
    me = psutil.Process()
    total = 0.0
    for process in [me] + me.children(recursive=True):
        try:
            t = process.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
        except psutil.Error:  # exited between the listing and the reading
            pass
    return total


MODES = ("sequential", "2 processes", "LocalCluster")
UNPAUSED = "LocalCluster, unpaused"  # stepline with quiet_dask_workers=False: Dask's workers as they are
PAUSED = "LocalCluster, paused"  # the peer on workers paused as stepline pauses them
# (who, mode) -> the (who, mode) it is paired with: the same workers, paused or not alike
PAIRS = {("stepline", "sequential"): ("plain", "sequential"), ("stepline", "2 processes"): ("plain", "2 processes"),
         ("stepline", "LocalCluster"): ("plain", PAUSED), ("stepline", UNPAUSED): ("plain", "LocalCluster")}


def _pause_workers(client, pause: bool) -> None:
    """Pause (or resume) the workers' profiler and tick monitor, as a stepline search does."""
    from stepline.automl import dask_quiet

    def toggle(dask_worker):
        (dask_quiet.quiet if pause else dask_quiet.resume)(dask_worker, "bench-automl-peer")
    client.run(toggle)


def _plain_on_paused_workers(optuna, trials: int, work: int, client, where: list) -> float:
    _pause_workers(client, True)
    try:
        return time_plain_parallel(optuna, trials, work, client, where)
    finally:
        _pause_workers(client, False)


def speedup(trials: int, work: int, repeats: int) -> None:
    """Each repeat runs stepline and its plain-Optuna peer back to back in each mode (their
    order alternating between repeats), on the same cluster, so that a change of the
    machine's load hits both; the warm-up searches of both are not timed."""
    import distributed
    import optuna
    X, y = np.zeros((20, 1)), np.zeros(20)
    one = time_search(work, 1, X, y)
    print(f"\n2. speedup of 2 workers: {trials} trials of one CPU-bound fit each "
          f"(~{one * 1e3:.0f} ms sequential; median of {repeats}; stepline and plain Optuna alternate)")
    rows = [pair[i] for pair in PAIRS.items() for i in (0, 1)]
    times = {key: [] for key in rows}
    where = {key: [] for key in rows}
    beyond = {key: [] for key in rows}  # CPU s a wall s beyond the trials' own threads, all processes
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=":0", silence_logs=logging.ERROR) as cluster, \
            distributed.Client(cluster) as client:
        first_processes = time_search(1000, 2, X, y, n_jobs=2)
        first_cluster = time_search(1000, 2, X, y, client=client)
        time_plain_parallel(optuna, 2, 1000, client)  # the peer's warm-up on the same workers
        print(f"  (first search of the process, 2 tiny trials, not in the table: n_jobs=2 {first_processes:.2f} s "
              f"— it starts the fork server, which imports stepline and scikit-learn once; "
              f"LocalCluster {first_cluster:.2f} s — its workers import them)")
        runs = {("stepline", "sequential"): lambda w: time_search(work, trials, X, y, w),
                ("stepline", "2 processes"): lambda w: time_search(work, trials, X, y, w, n_jobs=2),
                ("stepline", "LocalCluster"): lambda w: time_search(work, trials, X, y, w, client=client),
                ("stepline", UNPAUSED): lambda w: time_search(work, trials, X, y, w, client=client,
                                                              quiet_dask_workers=False),
                ("plain", "sequential"): lambda w: time_plain_parallel(optuna, trials, work, None, w),
                ("plain", "2 processes"): lambda w: time_plain_processes(optuna, trials, work, w),
                ("plain", "LocalCluster"): lambda w: time_plain_parallel(optuna, trials, work, client, w),
                ("plain", PAUSED): lambda w: _plain_on_paused_workers(optuna, trials, work, client, w)}
        for repeat in range(repeats):
            for pair in PAIRS.items():
                for key in (pair if repeat % 2 == 0 else pair[::-1]):
                    before = tree_cpu()
                    times[key].append(runs[key](where[key]))
                    spent = where[key][-1]
                    beyond[key].append((tree_cpu() - before - spent["cpu"]) / spent["wall"])
    print(f"  {'':<32} {'median':>8}  {'speedup':>7}  {'best':>5}  {'busy':>5}  idle ms a worker: first  gaps  tail"
          f"  beyond ms/s   stepline/plain")
    for who in ("stepline", "plain"):
        reference, best = statistics.median(times[who, "sequential"]), min(times[who, "sequential"])
        for key in [k for k in rows if k[0] == who]:
            t = times[key]
            share = {k: statistics.median(w[k] for w in where[key]) for k in ("busy", "first", "gaps", "tail")}
            paired = ""
            if key in PAIRS:
                paired = f"{statistics.median(a / b for a, b in zip(t, times[PAIRS[key]])):.3f} (wall, paired)"
            print(f"  {who + ', ' + key[1]:<32} {statistics.median(t):7.2f} s  {reference / statistics.median(t):6.2f}×"
                  f"  {best / min(t):4.2f}×  {share['busy']:5.1%}  {share['first'] * 1e3:21.0f} {share['gaps'] * 1e3:5.0f}"
                  f" {share['tail'] * 1e3:5.0f}  {statistics.median(beyond[key]) * 1e3:11.0f}   {paired}")
    for (_, mode), peer in list(PAIRS.items())[1:]:
        ours = statistics.median(times["stepline", "sequential"]) / statistics.median(times["stepline", mode])
        theirs = statistics.median(times["plain", "sequential"]) / statistics.median(times[peer])
        print(f"  stepline's speedup over plain Optuna's, {mode:<22} = {ours / theirs:.2f} (peer: {peer[1]})")
    for who, paused, unpaused in (("stepline", "LocalCluster", UNPAUSED), ("plain", PAUSED, "LocalCluster")):
        ratio = statistics.median(a / b for a, b in zip(times[who, paused], times[who, unpaused]))
        print(f"  {who} on the LocalCluster, the workers' profiler and tick paused over running: {ratio:.3f} "
              f"(wall, same repeat); beyond the trials {statistics.median(beyond[who, paused]) * 1e3:.0f} vs "
              f"{statistics.median(beyond[who, unpaused]) * 1e3:.0f} ms/s")
    print("  (plain: Optuna's ask/tell, 2 trials in flight, the same trials as a plain function. best: the best\n"
          "   repeat over the best sequential one. busy: the workers' time in trials over 2 × the wall time; the\n"
          "   idle ms are what the framework costs beyond the trials: see where_time_went. stepline/plain: the\n"
          "   median over the repeats of stepline's wall time over its peer's, run back to back. unpaused:\n"
          "   quiet_dask_workers=False, the workers' profiler and tick monitor left running (Dask as it is);\n"
          "   paused: the peer with them paused as a stepline search pauses them (stepline's default).\n"
          "   beyond ms/s: the CPU this process and its descendants (the cluster's scheduler, nannies and\n"
          "   workers; the worker processes) used during the search beyond the trials' own threads, in ms a\n"
          "   second of its wall time: what the framework and the cluster take from the trials' 2 cores; the\n"
          "   machine's load moves it much less than the wall times)")
    print("  (the speedup is bounded by the cores this process's session gets: with the kernel's\n"
          "   autogroup scheduling, a session's processes share one CPU share, so on a machine\n"
          "   saturated by other sessions 2 workers get the CPU time of 1.)")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=300)
    parser.add_argument("--sqlite-trials", type=int, default=60)
    parser.add_argument("--par-trials", type=int, default=12)
    parser.add_argument("--work", type=int, default=10_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sqlite-dir", default="/dev/shm" if os.path.isdir("/dev/shm") else None,
                        help="folder of the SQLite file (default: /dev/shm, a RAM disk, so that the "
                             "shared machine's disk does not drown the framework's cost)")
    parser.add_argument("--skip-overhead", action="store_true")
    parser.add_argument("--skip-speedup", action="store_true")
    args = parser.parse_args(argv)
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.simplefilter("ignore")
    print(f"stepline.automl benchmark — Python {sys.version.split()[0]}, optuna {optuna.__version__}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at {time.strftime('%H:%M:%S')}")
    if not args.skip_overhead:
        overhead(optuna, args.trials, args.sqlite_trials, args.repeats, args.sqlite_dir)
    if not args.skip_speedup:
        speedup(args.par_trials, args.work, args.repeats)
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end ({time.strftime('%H:%M:%S')})")


if __name__ == "__main__":
    main()
