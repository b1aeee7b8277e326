"""Computing the missing runs: in this process, in local worker processes (the default: one
per core, one torch thread each), or on a Dask distributed cluster; and the ``sweep`` command.

:func:`ensure` is the one call the notebooks and the sweep use: it returns the stored runs of
a list of :class:`~dannlib.store.RunSpec` and trains only the missing ones. Runs that other
runs depend on (ADDA's pre-training) go first. An interrupted sweep (Ctrl-C, SIGKILL, a worker
or machine that goes away) loses at most the runs in flight: every finished run is already in
the store, and a rerun continues from there. A worker that dies mid-run has its run retried.

``python -m dannlib sweep --profile paper [--only 05,06] [--workers N] [--scheduler ADDR]
[--time-limit MINUTES] [--recompute]`` (:mod:`dannlib.sweep_command`) trains every run that
the selected notebooks need under a profile, without executing the notebooks, prints a
summary (found / trained / failed) and writes it to ``results/<profile>/sweep.json``.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from .store import DANN_STEPS_PER_SECOND, RunSpec, usable, Store, StoredRun, compute, estimate_seconds
from .pool import _payload, _run_local, _worker_compute, describe_failure  # noqa: F401  (the worker pool)
from .settings import SCHEDULER_ENV, WORKERS_ENV, check_scheduler, check_time_limit, check_workers  # noqa: F401
from .utils import progress_enabled



class MissingRunsError(RuntimeError):
    """Runs a notebook needs are not in the store and training them was not allowed."""


class RunsFailedError(RuntimeError):
    """None of the runs a notebook needs could be had: the message lists the runs that failed
    and why (or says that none is stored yet), instead of an empty table failing later."""


@dataclass
class SweepSummary:
    total: int = 0
    found: int = 0
    trained: int = 0
    failed: list = field(default_factory=list)       # (label, error)
    not_started: int = 0
    seconds: float = 0.0

    def line(self) -> str:
        s = (f"{self.total} runs: {self.found} found in the store, {self.trained} trained, "
             f"{len(self.failed)} failed")
        if self.not_started:
            s += f", {self.not_started} not started (time limit)"
        return s + f" ({self.seconds:.0f} s)"


TRAIN_MISSING = (True, False, "auto", "stored")


def check_train_missing(value):
    """``value`` as one of :data:`TRAIN_MISSING` (the strings "true"/"false" as booleans);
    ValueError otherwise."""
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    if isinstance(value, str):
        value = value.strip().lower()
    if value not in TRAIN_MISSING or (value in (0, 1) and not isinstance(value, bool)):
        raise ValueError(f"train_missing must be True, False, 'auto' or 'stored'; got {value!r}")
    return value


def default_workers() -> int:
    """``$DANNLIB_WORKERS`` (ValueError, naming it, unless an integer >= 1), else one per core."""
    return check_workers(None)


def _unique(specs) -> list[RunSpec]:
    return list(dict.fromkeys(specs))


def _phases(specs: list[RunSpec], store: Store, recompute: bool) -> list[list[RunSpec]]:
    """The runs to train, in phases: first every run another one depends on (ADDA's
    pre-training), so that no worker retrains a dependency that another worker is computing
    at the same time; then the rest. Each phase longest first (estimated cost), so that the
    runs that finish last are short ones and no worker idles long at the end."""
    todo = [s for s in specs if recompute or store.get(s) is None]
    deps = _unique(d for s in todo for d in s.dependencies() if d in todo or not usable(store.get(d)))
    rest = [s for s in todo if s not in deps]
    return [sorted(p, key=lambda s: -s.cost_steps()) for p in (deps, rest) if p]


def ensure(specs, *, store: Store | None = None, workers: int | None = None, scheduler: str | None = None,
           data_root=None, train_missing: bool | str = True, recompute: bool = False,
           time_limit: float | None = None, progress: bool = True, budget_seconds: float = 600.0,
           hint: str = "") -> dict[RunSpec, StoredRun]:
    """The stored runs of ``specs`` (a dict spec -> :class:`StoredRun`), training the missing.

    ``train_missing``: True trains them; False raises :class:`MissingRunsError`; ``"auto"``
    trains them only when the estimate is under ``budget_seconds`` (so opening a notebook
    never silently starts hours of training) and otherwise raises, saying how many runs are
    missing, roughly how long they take and which command computes them (``hint``);
    ``"stored"`` trains nothing and returns what the store holds (to look at a profile while
    its sweep is still running; :func:`dannlib.plan.coverage_note` says what is missing).
    The strings "true"/"false" (e.g. from an environment variable) mean True/False.
    ``workers``: local processes (default ``$DANNLIB_WORKERS`` or one per core; 1 trains in
    this process); ``scheduler``: a Dask scheduler address (default ``$DANNLIB_SCHEDULER``).
    Failed runs are left out of the returned dict; the summary is in ``ensure.last_summary``.
    """
    train_missing = check_train_missing(train_missing)
    store = store or Store()
    if data_root is not None and store.data_root is None:  # stored runs' data fingerprints compare with it
        store = Store(store.root, data_root=data_root)
    specs = _unique(specs)
    if train_missing == "stored":
        ensure.last_summary = SweepSummary(total=len(specs))
        out = {s: r for s in specs if (r := store.get(s)) is not None}
        ensure.last_summary.found = len(out)
        ensure.last_summary.not_started = len(specs) - len(out)
        return out
    workers = check_workers(workers)
    check_time_limit(time_limit, setting="time_limit", unit="seconds")
    scheduler = scheduler if scheduler is not None else os.environ.get(SCHEDULER_ENV) or None
    phases = _phases(specs, store, recompute)
    missing = [s for p in phases for s in p]
    if missing and train_missing is not True:
        est = estimate_seconds(missing, workers)
        if train_missing is False or est > budget_seconds:
            raise MissingRunsError(
                f"{len(missing)} of {len(specs)} runs are not in the store {store.root} "
                f"(about {est / 60:.0f} min on a 2-core CPU with {workers} worker(s)). Compute them first"
                + (f": {hint}" if hint else "") + ", or pass train_missing=True.")
    summary = SweepSummary(total=len(specs), found=len(specs) - len([s for s in missing if s in specs]))
    ensure.last_summary = summary
    start = time.monotonic()
    deadline = None if time_limit is None else start + time_limit
    try:
        for phase in phases:
            _run_phase(phase, store, workers, scheduler, data_root, summary, deadline, progress)
    finally:
        summary.seconds = time.monotonic() - start
        ensure.last_summary = summary
    out = {}
    for s in specs:
        r = store.get(s)
        if r is not None:
            out[s] = r
    return out


ensure.last_summary = None


def check_fetched(p, runs, summary, hint: str) -> None:
    """Raise :class:`~dannlib.sweep.RunsFailedError` when the plan has runs but none could be
    had, naming the failed runs and their errors (or, none having failed, that none is stored
    yet); warn when only some failed."""
    import warnings

    failed = list(summary.failed) if summary is not None else []
    listing = "".join(f"\n  - {label}: {err}" for label, err in failed[:20])
    if len(failed) > 20:
        listing += f"\n  - ... and {len(failed) - 20} more"
    if p.runs and not runs:
        if failed:
            raise RunsFailedError(f"{p.notebook} [{p.profile}]: all {len(p.specs)} runs failed; "
                                  f"{len(failed)} raised:{listing}")
        raise RunsFailedError(f"{p.notebook} [{p.profile}]: none of its {len(p.specs)} runs is in the store yet; "
                              f"compute them with `{hint}`")
    if failed:
        warnings.warn(f"{p.notebook} [{p.profile}]: {len(failed)} run(s) failed and are left out:{listing}",
                      stacklevel=3)


def _run_phase(phase, store, workers, scheduler, data_root, summary, deadline, progress):
    bar = None
    if progress and progress_enabled():
        bar = _RunsBar(phase, workers if not scheduler else len(phase))
    try:
        if scheduler:
            _run_dask(phase, store, scheduler, data_root, summary, deadline, bar)
        elif workers <= 1 or len(phase) == 1:
            for spec in phase:
                if deadline is not None and time.monotonic() >= deadline:
                    summary.not_started += 1
                    continue
                try:
                    compute(spec, store, data_root=data_root, progress=progress)
                    summary.trained += 1
                except Exception as exc:  # a failing run does not stop the others
                    summary.failed.append((spec.label, describe_failure(exc)))
                if bar is not None:
                    bar.done(spec)
        else:
            _run_local(phase, store, workers, data_root, summary, deadline, bar)
    finally:
        if bar is not None:
            bar.close()


class _RunsBar:
    """One progress bar over a phase's runs, advancing by each run's estimated cost (so its
    ETA is in seconds of training, not in runs of very different lengths), with the count of
    finished runs beside it."""

    def __init__(self, phase, workers: int):
        from tqdm.auto import tqdm

        # rounded once, so that the updates add up to the total exactly (no "101%")
        self.cost = {s: round(s.cost_steps() / DANN_STEPS_PER_SECOND / max(1, min(workers, len(phase))), 1)
                     for s in phase}
        self.n, self.total = 0, len(phase)
        self.bar = tqdm(total=round(sum(self.cost.values()), 1), desc=f"runs 0/{self.total}", unit="s",
                        bar_format="{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}] {postfix}")

    def done(self, spec) -> None:
        self.n += 1
        self.bar.set_description_str(f"runs {self.n}/{self.total}", refresh=False)
        self.bar.set_postfix_str(spec.label, refresh=False)
        self.bar.update(min(self.cost.get(spec, 0.0), max(0.0, self.bar.total - self.bar.n)))

    def close(self) -> None:
        self.bar.close()



def _run_dask(phase, store, address, data_root, summary, deadline, bar):
    """Send the runs to a Dask distributed scheduler (``tcp://HOST:PORT``) or a
    ``distributed.Client`` object. The workers must see the same store and data folders
    (a shared filesystem) and import the same ``dannlib``. A run whose worker dies is
    rescheduled by the scheduler (up to ``distributed.scheduler.allowed-failures`` times,
    default 3); a run that raises is not retried (its error is reported). Under a time limit at most one run per
    worker thread is queued at a time, so no new run starts after the deadline."""
    try:
        from distributed import Client, as_completed
    except ImportError:
        raise RuntimeError("--scheduler needs Dask's distributed package: pip install 'dann-study[dask]' "
                           "(or pip install distributed)") from None
    if not isinstance(address, Client):
        check_scheduler(address)  # seconds, where a Client would wait 30 s and end in a traceback
    client = address if isinstance(address, Client) else Client(address)
    root = os.path.abspath(store.root)
    droot = None if data_root is None else os.path.abspath(data_root)
    try:
        pending, futures, completed = list(phase), {}, as_completed()

        def submit_more():
            limit = len(pending) if deadline is None else max(1, sum(client.nthreads().values()))
            while pending and len(futures) < limit:
                if deadline is not None and time.monotonic() >= deadline:
                    summary.not_started += len(pending)
                    pending.clear()
                    return
                spec = pending.pop(0)
                fut = client.submit(_worker_compute, _payload(spec), root, droot, 1, key=f"run-{spec.key}",
                                    pure=False)
                futures[fut] = spec
                completed.add(fut)

        submit_more()
        for fut in completed:
            spec = futures.pop(fut)
            try:
                fut.result()
                summary.trained += 1
            except Exception as exc:
                summary.failed.append((spec.label, describe_failure(exc)))
            if bar is not None:
                bar.done(spec)
            submit_more()
    finally:
        if not isinstance(address, Client):
            client.close()
