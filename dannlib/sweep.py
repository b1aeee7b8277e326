"""Computing the missing runs (:func:`ensure`): in this process, in local worker processes (one per core) or on a Dask
cluster, each run on one torch thread unless told otherwise (``threads``, $DANNLIB_THREADS), dependencies (ADDA's
pre-training) first. An interrupted sweep loses at most the runs in flight; a run whose worker process dies is retried;
a run that raises is reported with its error.
"""
from __future__ import annotations

import concurrent.futures as cf
import contextlib
import multiprocessing as mp
import os
import pickle
import signal
import sys
import time
from dataclasses import dataclass, field

import torch

from . import store as runstore
from .settings import check_scheduler, check_time_limit, check_workers, scheduler_setting
from .store import RunSpec, Store, StoredRun, estimate_seconds, run_cost_seconds, usable
from .utils import configure_threads, progress_enabled, thread_policy


class MissingRunsError(RuntimeError):
    """Runs a notebook needs are not in the store and training them was not allowed."""


class RunsFailedError(RuntimeError):
    """None of the runs a notebook needs could be had (the message says which failed and why)."""


class RunError(RuntimeError):
    """A worker's exception that does not survive pickling, as its type's name and message."""

    def __init__(self, type_name: str, message: str):
        super().__init__(f"{type_name}: {message}")
        self.type_name, self.message = type_name, message

    def __reduce__(self):
        return type(self), (self.type_name, self.message)


@dataclass
class SweepSummary:
    total: int = 0
    found: int = 0
    trained: int = 0
    failed: list = field(default_factory=list)       # (label, error)
    not_started: int = 0
    seconds: float = 0.0

    def line(self) -> str:
        return (f"{self.total} runs: {self.found} found in the store, {self.trained} trained, {len(self.failed)} failed"
                + (f", {self.not_started} not started (time limit)" if self.not_started else "")
                + f" ({self.seconds:.0f} s)")


def check_train_missing(value):
    """``value`` as one of True, False, "auto", "stored" (the strings "true"/"false" as booleans)."""
    if isinstance(value, str):
        value = {"true": True, "false": False}.get(value.strip().lower(), value.strip().lower())
    if value not in (True, False, "auto", "stored") or (value in (0, 1) and not isinstance(value, bool)):
        raise ValueError(f"train_missing must be True, False, 'auto' or 'stored'; got {value!r}")
    return value


def _phases(specs: list[RunSpec], store: Store, recompute: bool) -> list[list[RunSpec]]:
    """The runs to train: first every run another one depends on (so that no two workers
    train it at once), then the rest; each phase longest first (estimated cost)."""
    todo = [s for s in specs if recompute or store.get(s) is None]
    deps = list(dict.fromkeys(d for s in todo for d in s.dependencies() if d in todo or not usable(store.get(d))))
    rest = [s for s in todo if s not in deps]
    return [sorted(p, key=lambda s: -run_cost_seconds(s)) for p in (deps, rest) if p]


def phases_seconds(phases: list[list[RunSpec]], workers: int) -> float:
    """The estimate of a sweep's :func:`_phases`: a phase ends before the next starts, so their estimates add up."""
    return sum(estimate_seconds(p, workers) for p in phases)


def ensure(specs, *, store: Store | None = None, workers: int | None = None, scheduler: str | None = None,
           data_root=None, train_missing: bool | str = True, recompute: bool = False,
           time_limit: float | None = None, progress: bool = True, budget_seconds: float = 600.0,
           hint: str = "", threads: int | None = None) -> dict[RunSpec, StoredRun]:
    """The stored runs of ``specs`` (a dict spec -> :class:`StoredRun`; failed runs left out; the summary in
    ``ensure.last_summary``). ``train_missing``: True trains the missing; False raises :class:`MissingRunsError`;
    "auto" trains them only if the estimate is under ``budget_seconds`` (else raises, naming ``hint``); "stored"
    trains nothing. ``workers``: local processes (1: in this process); ``scheduler``: a Dask scheduler address;
    ``threads``: torch threads each run trains on, in a worker or in this process (default
    :func:`~dannlib.utils.thread_policy`'s: $DANNLIB_THREADS, else 1)."""
    train_missing = check_train_missing(train_missing)
    store = store or Store()
    if data_root is not None and store.data_root is None:  # stored runs' data fingerprints compare with it
        store = Store(store.root, data_root=data_root)
    specs = list(dict.fromkeys(specs))
    if train_missing == "stored":
        out = {s: r for s in specs if (r := store.get(s)) is not None}
        ensure.last_summary = SweepSummary(total=len(specs), found=len(out), not_started=len(specs) - len(out))
        return out
    workers, threads = check_workers(workers), thread_policy(threads)
    check_time_limit(time_limit, setting="time_limit", unit="seconds")
    scheduler, scheduler_from = (scheduler, "scheduler") if scheduler is not None else scheduler_setting(None)
    phases = _phases(specs, store, recompute)
    missing = [s for p in phases for s in p]
    if missing and train_missing is not True:
        est = phases_seconds(phases, workers)
        if train_missing is False or est > budget_seconds:
            raise MissingRunsError(
                f"{len(missing)} of {len(specs)} runs are not in the store {store.root} "
                f"(about {est / 60:.0f} min on this machine with {workers} worker(s)). Compute them first"
                + (f": {hint}" if hint else "") + ", or pass train_missing=True.")
    # an unreachable scheduler in seconds, named as it was set (a Client would wait 30 s and end in a traceback)
    if missing and scheduler and isinstance(scheduler, str):
        check_scheduler(scheduler, setting=scheduler_from)
    summary = ensure.last_summary = SweepSummary(total=len(specs), found=len(specs) - len(set(missing) & set(specs)))
    start = time.monotonic()
    deadline = None if time_limit is None else start + time_limit
    try:
        for phase in phases:
            _run_phase(phase, store, workers, scheduler, data_root, summary, deadline, progress, threads)
    finally:
        summary.seconds = time.monotonic() - start
    return {s: r for s in specs if (r := store.get(s)) is not None}


ensure.last_summary = None


def compute(spec: RunSpec, store: Store, *, data_root=None, progress: bool = True,
            threads: int | None = None) -> StoredRun:
    """Train ``spec`` (and, first, any missing run it depends on), store it, return it; a
    digits run's record keeps its label-free selection scores (:mod:`dannlib.selection`). It trains on ``threads``
    torch threads (default :func:`~dannlib.utils.thread_policy`'s) in a worker and in the caller's process alike,
    whose thread count is restored afterwards: a run trained in this process is the run a sweep's worker trains."""
    before = torch.get_num_threads()
    configure_threads(threads)
    try:
        return _compute(spec, store, data_root=data_root, progress=progress)
    finally:
        torch.set_num_threads(before)


def _compute(spec: RunSpec, store: Store, *, data_root=None, progress: bool = True) -> StoredRun:
    from .data.fingerprint import current_fingerprint
    from .methods import ORACLES, train
    from .selection import SELECTION_FIELD, score_trained, scoreable
    from .training import RunResult
    deps = [stored if usable(stored := store.get(dep)) else _compute(dep, store, data_root=data_root, progress=progress)
            for dep in spec.dependencies()]  # on the threads compute set for this run
    source, target, eval_sets = runstore.load_data(spec.data, data_root)
    # the last dependency's networks, rebuilt on the data's device (CUDA where there is one)
    pretrained = [RunResult(method=d.spec.method, seed=d.spec.seed, config=d.spec.config, history=d.history,
                            final=d.final, seconds=d.seconds, steps=d.final.get("steps", 0),
                            modules=d.load_modules(device=source.x.device)) for d in deps[-1:]] or None
    fingerprint = current_fingerprint(spec.data, data_root)
    if spec.method in ORACLES:
        source = target  # the labelled target training set: an upper bound, not adaptation
    start = time.perf_counter()
    (result,) = train(spec.method, source, target.unlabelled(), seeds=[spec.seed], eval_sets=eval_sets,
                      progress=progress, monitor_size=spec.monitor_size, pretrained=pretrained, **spec.config)
    # the whole call: networks built, training, the final evaluation (``seconds``: the loop alone)
    result.final["wall_seconds"] = time.perf_counter() - start
    if spec.data["kind"] == "digits" and scoreable(result.modules):  # label-free scores and oracle (notebook 07)
        result.final[SELECTION_FIELD] = score_trained(result.modules, eval_sets, target.unlabelled().x)
    if (stored := store.put(spec, result, data_fingerprint=fingerprint)) is None:
        raise RuntimeError(f"{spec.label}: trained and written to {store.path(spec)}, but the store does not read it "
                           "back (see the warning above); nothing of it is reported as finished")
    return stored


# -- workers --------------------------------------------------------------------------------------
def _worker_compute(payload: dict, store_root: str, data_root: str | None, threads: int) -> dict:
    """A worker process's entry point (local pool or Dask): train one run, return its summary."""
    spec = RunSpec(**payload)
    try:
        run = compute(spec, Store(store_root, data_root=data_root), data_root=data_root, progress=False,
                      threads=threads)
    except Exception as exc:
        try:
            pickle.loads(pickle.dumps(exc))
        except Exception:
            raise RunError(type(exc).__name__, str(exc)) from None
        raise
    return {"key": spec.key, "label": spec.label, "status": run.status, "seconds": run.seconds}


def _payload(spec: RunSpec) -> dict:
    return {k: v for k, v in spec.payload().items() if k != "store_format"}


def _init_worker():
    """A local worker: no progress bar; Ctrl-C is the parent's (it kills the workers); and on
    Linux the kernel SIGKILLs the worker when the parent ends, however it ends."""
    os.environ["DANNLIB_PROGRESS"] = "0"
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        import ctypes
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG
            if os.getppid() == 1:  # the parent died before the call
                os._exit(1)


def _past(deadline, summary, pending) -> bool:
    """Past the deadline: the pending runs are counted as not started and dropped."""
    if deadline is not None and time.monotonic() >= deadline:
        summary.not_started += len(pending)
        pending.clear()
        return True
    return False


def _settle(spec, result, summary, bar) -> None:
    """Count the run whose outcome ``result()`` gives (trained, or failed with its error)."""
    try:
        result()
        summary.trained += 1
    except Exception as exc:  # a failing run does not stop the others
        summary.failed.append((spec.label, str(exc) if isinstance(exc, RunError) else f"{type(exc).__name__}: {exc}"))
    if bar is not None:
        bar.done(spec)


def _run_phase(phase, store, workers, scheduler, data_root, summary, deadline, progress, threads):
    bar = _RunsBar(phase, workers if not scheduler else len(phase)) if progress and progress_enabled() else None
    pending = list(phase)
    try:
        if scheduler:
            _run_dask(pending, store, scheduler, data_root, summary, deadline, bar, threads)
        elif workers <= 1 or len(phase) == 1:
            while pending and not _past(deadline, summary, pending):
                spec = pending.pop(0)
                _settle(spec, lambda: compute(spec, store, data_root=data_root, progress=progress, threads=threads),
                        summary, bar)
        else:
            _run_local(pending, store, workers, data_root, summary, deadline, bar, threads)
    finally:
        if bar is not None:
            bar.close()


def _run_local(pending, store, workers, data_root, summary, deadline, bar, threads):
    """Spawned worker processes, at most ``workers`` runs in flight. A worker that dies breaks
    the pool: its runs in flight are retried in a new pool, up to 3 times each."""
    attempts = dict.fromkeys(pending, 0)
    args = (str(store.root), None if data_root is None else str(data_root), threads)

    def retry_or_fail(spec):
        if attempts[spec] < 3:
            print(f"sweep: retrying {spec.label} (its worker process died)", file=sys.stderr)
            pending.append(spec)
        else:
            summary.failed.append((spec.label, f"its worker process died {attempts[spec]} times"))
            if bar is not None:
                bar.done(spec)

    while pending:
        with cf.ProcessPoolExecutor(max_workers=min(workers, len(pending)), mp_context=mp.get_context("spawn"),
                                    initializer=_init_worker) as pool:
            in_flight, broken = {}, False
            try:
                while (pending or in_flight) and not broken:
                    while pending and len(in_flight) < workers and not _past(deadline, summary, pending):
                        try:
                            fut = pool.submit(_worker_compute, _payload(pending[0]), *args)
                        except cf.process.BrokenProcessPool:  # a worker died since the last wait
                            print("sweep: a worker process died; continuing in a new pool", file=sys.stderr)
                            broken = True
                            break
                        in_flight[fut] = spec = pending.pop(0)
                        attempts[spec] += 1
                    if in_flight and not broken:
                        cf.wait(in_flight, return_when=cf.FIRST_COMPLETED)
                    for fut in [f for f in in_flight if f.done()]:
                        if isinstance(fut.exception(), cf.process.BrokenProcessPool):
                            broken = True
                        else:
                            _settle(in_flight.pop(fut), fut.result, summary, bar)
                for spec in in_flight.values():  # only when broken: they died with the pool
                    retry_or_fail(spec)
            except BaseException:
                for p in list(getattr(pool, "_processes", {}).values()):
                    p.kill()
                raise


def _run_dask(pending, store, address, data_root, summary, deadline, bar, threads):
    """Send the runs to a Dask scheduler (``tcp://HOST:PORT``) or ``distributed.Client``; its
    workers must see the same store and data folders and import the same ``dannlib``. The
    scheduler reschedules a run whose worker dies; a run that raises is reported. Under a time
    limit at most one run per worker thread is queued, so none starts after the deadline."""
    try:
        from distributed import Client, as_completed
    except ImportError:
        raise RuntimeError("--scheduler needs Dask's distributed package: pip install 'dann-study[dask]' "
                           "(or pip install distributed)") from None
    client = address if isinstance(address, Client) else Client(address)
    args = (os.path.abspath(store.root), None if data_root is None else os.path.abspath(data_root), threads)
    futures, completed = {}, as_completed()

    def submit_more():
        limit = len(pending) if deadline is None else max(1, sum(client.nthreads().values()))
        while pending and len(futures) < limit and not _past(deadline, summary, pending):
            spec = pending.pop(0)
            fut = client.submit(_worker_compute, _payload(spec), *args, key=f"run-{spec.key}", pure=False)
            futures[fut] = spec
            completed.add(fut)

    try:
        submit_more()
        for fut in completed:
            _settle(futures.pop(fut), fut.result, summary, bar)
            submit_more()
    finally:
        if not isinstance(address, Client):
            client.close()


class _RunsBar:
    """One progress bar over a phase's runs, advancing by each run's estimated cost in seconds."""

    def __init__(self, phase, workers: int):
        from tqdm.auto import tqdm
        # rounded once, so that the updates add up to the total exactly (no "101%")
        self.cost = {s: round(run_cost_seconds(s) / max(1, min(workers, len(phase))), 1) for s in phase}
        self.n, self.bar = 0, tqdm(total=round(sum(self.cost.values()), 1), desc=f"runs 0/{len(phase)}", unit="s",
                                   bar_format="{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}] {postfix}")
        self.close = self.bar.close

    def done(self, spec) -> None:
        self.n += 1
        self.bar.set_description_str(f"runs {self.n}/{len(self.cost)}", refresh=False)
        self.bar.set_postfix_str(spec.label, refresh=False)
        self.bar.update(min(self.cost.get(spec, 0.0), max(0.0, self.bar.total - self.bar.n)))
