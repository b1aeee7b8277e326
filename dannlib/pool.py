"""The sweep's local worker pool: spawned processes, one run each at a time, a run retried
only when its worker process died (a run that raises is reported with its error)."""
from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import os
import signal
import sys
import time

from .store import RunSpec, Store, compute
from .utils import configure_threads


class RunError(RuntimeError):
    """A run's exception that could not cross the process boundary back to the sweep (it
    does not survive pickling), as its type's name and message. Without this stand-in the
    parent could not read the worker's answer and would take the worker for dead."""

    def __init__(self, type_name: str, message: str):
        super().__init__(f"{type_name}: {message}")
        self.type_name, self.message = type_name, message

    def __reduce__(self):
        return type(self), (self.type_name, self.message)


def survives_pickling(exc: BaseException) -> bool:
    import pickle

    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return False
    return True


def describe_failure(exc: BaseException) -> str:
    """``"TypeName: message"`` of a run's exception (a worker's stand-in :class:`RunError`
    already carries the original type's name)."""
    return str(exc) if isinstance(exc, RunError) else f"{type(exc).__name__}: {exc}"

def _worker_compute(payload: dict, store_root: str, data_root: str | None, threads: int) -> dict:
    """Entry point of a worker process (local pool or Dask): compute one run, return its
    summary. Runs on one torch thread unless told otherwise. It always trains, even when a
    record exists: the sweep hands out only runs to (re)train -- missing ones, dependencies
    whose weights are missing (a fresh clone keeps records, not every weights file), or every
    run under ``--recompute``."""
    configure_threads(threads)
    spec = RunSpec(payload["method"], payload["config"], payload["data"], payload["seed"], payload["monitor_size"])
    try:
        run = compute(spec, Store(store_root), data_root=data_root, progress=False)
    except Exception as exc:
        if survives_pickling(exc):
            raise
        raise RunError(type(exc).__name__, str(exc)) from None
    return {"key": spec.key, "label": spec.label, "status": run.status, "seconds": run.seconds}


def _payload(spec: RunSpec) -> dict:
    return {"method": spec.method, "config": spec.config, "data": spec.data, "seed": spec.seed,
            "monitor_size": spec.monitor_size}


def _init_worker():
    os.environ["DANNLIB_PROGRESS"] = "0"   # one bar over the runs, in the parent
    # Ctrl-C reaches the whole process group: the parent alone handles it (it kills the
    # workers and prints the summary); a worker would only print a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent()


def _die_with_parent() -> None:
    """Linux: have the kernel send this worker SIGKILL when the process that started it
    ends, however it ends (SIGTERM, SIGKILL, a crash). Otherwise a killed sweep's workers
    would go on training their runs unseen, taking the CPU from the rerun (their runs are
    atomic, so nothing half-written would remain either way). No-op elsewhere."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() == 1:  # the parent died before the call: nobody is left to notify us
            os._exit(1)
    except (OSError, AttributeError):
        pass


def _run_local(phase, store, workers, data_root, summary, deadline, bar, max_attempts: int = 3):
    """Local worker processes (spawned: no state inherited), at most ``workers`` runs in
    flight. A worker that dies (SIGKILL, out of memory) breaks the pool: the runs in flight
    are retried in a new pool, up to ``max_attempts`` times each."""
    pending = list(phase)
    attempts = {s: 0 for s in phase}
    ctx = mp.get_context("spawn")
    root = str(store.root)
    droot = None if data_root is None else str(data_root)
    while pending:
        broken = False
        with cf.ProcessPoolExecutor(max_workers=min(workers, len(pending)), mp_context=ctx,
                                    initializer=_init_worker) as pool:
            in_flight: dict[cf.Future, RunSpec] = {}
            try:
                while pending or in_flight:
                    while pending and len(in_flight) < workers:
                        if deadline is not None and time.monotonic() >= deadline:
                            summary.not_started += len(pending)
                            pending = []
                            break
                        spec = pending.pop(0)
                        try:
                            fut = pool.submit(_worker_compute, _payload(spec), root, droot, 1)
                        except cf.process.BrokenProcessPool:  # a worker died since the last wait
                            print("sweep: a worker process died; continuing in a new pool", file=sys.stderr)
                            pending.insert(0, spec)
                            broken = True
                            break
                        attempts[spec] += 1
                        in_flight[fut] = spec
                    if not broken and in_flight:
                        cf.wait(in_flight, return_when=cf.FIRST_COMPLETED)
                    for fut in [f for f in in_flight if f.done()]:
                        spec = in_flight.pop(fut)
                        try:
                            fut.result()
                            summary.trained += 1
                            if bar is not None:
                                bar.done(spec)
                        except cf.process.BrokenProcessPool:
                            broken = True
                            _retry_or_fail(spec, attempts, max_attempts, pending, summary, bar,
                                           "its worker process died")
                        except Exception as exc:
                            summary.failed.append((spec.label, describe_failure(exc)))
                            if bar is not None:
                                bar.done(spec)
                    if broken:  # every run still in flight died with the pool: retry them in a new one
                        for spec in in_flight.values():
                            _retry_or_fail(spec, attempts, max_attempts, pending, summary, bar,
                                           "its worker process died")
                        in_flight = {}
                        break
            except BaseException:
                for p in list(getattr(pool, "_processes", {}).values()):
                    p.kill()
                raise


def _retry_or_fail(spec, attempts, max_attempts, pending, summary, bar, why):
    if attempts[spec] < max_attempts:
        print(f"sweep: retrying {spec.label} ({why})", file=sys.stderr)
        pending.append(spec)
    else:
        summary.failed.append((spec.label, f"{why} {attempts[spec]} times"))
        if bar is not None:
            bar.done(spec)
