"""Executing one notebook with papermill in a kernel of this interpreter, into staging folders."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import stat
import time
from pathlib import Path
from typing import Sequence

from ..utils import PROJECT_ROOT, atomic_write
from .common import CURRENT_ENV_KERNEL, FAILED_DIRNAME, Interrupted, JOURNAL_SUFFIX, KERNEL_ENV, NotebookRun, Outputs, RUNNING_SUFFIX, STAGING_PREFIX, _RUNNING_KERNELS, store_root  # noqa: F401
from .transaction import RunLock, lab_kernelspec, _apply_commit, _display, _plan_commit, _rel, _shadow_results, clean_stale, path_replacements, tidy_notebook  # noqa: F401


# ----------------------------------------------------------------------------- execution


def _kernel_manager_class(current_env: bool, peaks: list, env: dict, started: list):
    """A jupyter kernel manager that records the kernel's peak memory, adds ``env`` to the
    kernel's environment, encrypts the kernel's sockets and, when ``current_env``, makes
    the ``python3`` kernel this interpreter.

    Papermill looks ``python3`` up among the installed kernelspecs, and a user-level one
    (``~/.local/share/jupyter/kernels/python3``) or one on ``$JUPYTER_PATH`` wins over the
    virtual environment's, so it may start a different Python. With ``current_env`` this
    manager answers ``python3`` with ipykernel's own spec for ``sys.executable`` (the
    approach of nbval's ``--nbval-current-env``).

    CurveZMQ transport encryption (where pyzmq has it and the kernelspec declares it) keeps
    ipykernel from warning that the kernel runs over TCP in plain text.

    Just before the kernel is shut down, its peak resident set (``VmHWM`` in
    ``/proc/<pid>/status``, Linux only) is appended to ``peaks`` in MiB.
    (``getrusage(RUSAGE_CHILDREN)`` would not do: a forked child starts with the parent's
    resident set, so it reports this process's own memory, torch included.) Each manager
    is appended to ``started`` so that an interruption can kill its kernel."""
    import ipykernel.kernelspec
    import zmq
    from jupyter_client import AsyncKernelManager
    from jupyter_client.kernelspec import KernelSpecManager
    from traitlets import default

    class CurrentEnvKernelSpecManager(KernelSpecManager):
        def get_kernel_spec(self, kernel_name):
            if current_env and kernel_name == CURRENT_ENV_KERNEL:
                return self.kernel_spec_class(
                    resource_dir=ipykernel.kernelspec.RESOURCES, **ipykernel.kernelspec.get_kernel_dict()
                )
            return super().get_kernel_spec(kernel_name)

    class DannlibKernelManager(AsyncKernelManager):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            started.append(self)
            if zmq.has("curve") and "transport_encryption" in self.trait_names():
                self.transport_encryption = "auto"

        @default("kernel_spec_manager")
        def _kernel_spec_manager_default(self):
            return CurrentEnvKernelSpecManager(data_dir=self.data_dir)

        async def _async_pre_start_kernel(self, **kw):
            kw["env"] = {**os.environ, **kw.get("env", {}), **env}
            return await super()._async_pre_start_kernel(**kw)

        async def shutdown_kernel(self, now: bool = False, restart: bool = False) -> None:
            peak = _peak_rss_mib(getattr(self.provisioner, "pid", None))
            if peak is not None:
                peaks.append(peak)
            await super().shutdown_kernel(now=now, restart=restart)

    return DannlibKernelManager


def _kill_kernels(managers: Sequence) -> None:
    """SIGKILL the kernels this process started (their own process groups) and remove their
    connection files; for an interruption, when papermill cannot shut them down itself."""
    for km in managers:
        if getattr(km, "_dannlib_killed", False):
            continue
        km._dannlib_killed = True
        provisioner = getattr(km, "provisioner", None)
        pid, pgid = getattr(provisioner, "pid", None), getattr(provisioner, "pgid", None)
        with contextlib.suppress(OSError):
            if pgid and pgid != os.getpgid(0):
                os.killpg(pgid, signal.SIGKILL)
            elif pid:
                os.kill(pid, signal.SIGKILL)
        process = getattr(provisioner, "process", None)
        if process is not None:
            with contextlib.suppress(Exception):
                process.wait()
        connection_file = getattr(km, "connection_file", None)
        if connection_file:
            with contextlib.suppress(OSError):
                os.unlink(connection_file)


def _peak_rss_mib(pid: int | None) -> float | None:
    """Peak resident set size of process ``pid`` in MiB (Linux ``VmHWM``), else None."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    return None


def _describe_error(exc: BaseException) -> str:
    ename, evalue = getattr(exc, "ename", None), getattr(exc, "evalue", None)
    if ename is not None:  # papermill.PapermillExecutionError: the notebook's own exception
        where = f"cell [{exc.exec_count}] " if getattr(exc, "exec_count", None) else ""
        return f"{where}{ename}: {evalue}"
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}".rstrip(": ")




# ----------------------------------------------------------------------------- one notebook


def run_notebook(
    path: str | os.PathLike,
    parameters: dict,
    outputs: Outputs,
    profile: str,
    kernel_name: str | None = None,
    progress: bool = True,
    data_root: Path | None = None,
    run_id: str | None = None,
) -> tuple[NotebookRun, dict | None]:
    """Execute one notebook with papermill (cwd = its folder) into staging; never raises for
    a failure inside the notebook, which is reported in the returned :class:`NotebookRun`.
    Returns the run and, on success, the commit plan (see :func:`_apply_commit`) that moves
    its outputs into place; raises :class:`Interrupted` (after cleaning up) on a signal.

    ``kernel_name`` None: this interpreter; otherwise an installed kernelspec's name.
    ``run_id``: the id of the :class:`RunLock` the caller holds over the output folders (its
    staging folders and executed notebook are named by it); None: one held for this call."""
    if run_id is None:
        with RunLock([outputs.notebooks, outputs.figures, outputs.results]) as lock:
            return run_notebook(path, parameters, outputs, profile, kernel_name, progress, data_root, lock.id)
    import nbformat
    import papermill

    path = Path(path).resolve()
    tag = f"{run_id}-{path.stem}"
    target = outputs.notebooks / path.name
    outputs.notebooks.mkdir(parents=True, exist_ok=True)
    executed = outputs.notebooks / f".{path.stem}.{run_id}{RUNNING_SUFFIX}"
    fig_stage = outputs.figures / f"{STAGING_PREFIX}{tag}"
    res_stage = outputs.results / f"{STAGING_PREFIX}{tag}"
    env = {**KERNEL_ENV, "DANNLIB_FIGURES": str(fig_stage), "DANNLIB_RESULTS": str(res_stage),
           "DANNLIB_PROFILE": profile, "DANNLIB_STORE": str(store_root(outputs))}
    if data_root is not None:
        env["DANNLIB_DATA"] = str(data_root)
    peaks: list[float] = []
    managers = _RUNNING_KERNELS
    managers.clear()
    kernel_manager_class = _kernel_manager_class(kernel_name is None, peaks, env, managers)
    progress_bar = {"desc": path.stem, "position": 1, "leave": False} if progress else False
    start = time.perf_counter()
    run = NotebookRun(notebook=path.stem, status="ok", seconds=0.0)
    plan = None

    def discard():
        shutil.rmtree(fig_stage, ignore_errors=True)
        shutil.rmtree(res_stage, ignore_errors=True)
        executed.unlink(missing_ok=True)

    try:
        for stage in (fig_stage, res_stage):
            shutil.rmtree(stage, ignore_errors=True)
            stage.mkdir(parents=True)
        _shadow_results(outputs.results, profile, res_stage)
        papermill.execute_notebook(
            str(path),
            str(executed),
            parameters=parameters,
            kernel_name=kernel_name or CURRENT_ENV_KERNEL,
            cwd=str(path.parent),
            progress_bar=progress_bar,
            kernel_manager_class=kernel_manager_class,
        )
        data = env.get("DANNLIB_DATA") or os.environ.get("DANNLIB_DATA")
        rules = path_replacements([
            (fig_stage, _rel(outputs.figures, path.parent)),
            (res_stage, _rel(outputs.results, path.parent)),
            (outputs.project, _rel(outputs.project, path.parent)),
            (PROJECT_ROOT, _rel(PROJECT_ROOT, path.parent)),
            *([(data, "$DANNLIB_DATA")] if data else []),
            (Path.home(), "~"),
        ])
        nb = nbformat.read(executed, as_version=4)
        tidy_notebook(nb, path.name, parameters, rules, kernelspec=lab_kernelspec(kernel_name))
        nbformat.write(nb, str(executed))
        os.chmod(executed, stat.S_IMODE((target if target.exists() else path).stat().st_mode))
        plan = _plan_commit(executed, target, fig_stage, outputs.figures, res_stage, outputs.results)
    except KeyboardInterrupt:
        _kill_kernels(managers)
        discard()
        raise
    except Exception as exc:  # a failing notebook must not stop the others
        run.status, run.error = "failed", _describe_error(exc)
        if executed.exists() and executed.stat().st_size > 0:  # papermill saved the partial execution
            failed = outputs.notebooks / FAILED_DIRNAME / path.name
            failed.parent.mkdir(exist_ok=True)
            os.chmod(executed, stat.S_IMODE(path.stat().st_mode))
            os.replace(executed, failed)
            run.failed_copy = _display(failed, outputs.project)
        discard()
    finally:
        run.seconds = round(time.perf_counter() - start, 2)
    if peaks:
        run.peak_rss_mib = round(max(peaks), 1)
    return run, plan


def commit(plan: dict, journal_dir: Path, stem: str, run_id: str) -> None:
    """Apply ``plan`` after writing it as a journal (named by the caller's :class:`RunLock`
    id, ``run_id``) that the next run replays if this process dies half-way (see
    :func:`clean_stale`)."""
    journal = journal_dir / f".{stem}.{run_id}{JOURNAL_SUFFIX}"
    with atomic_write(journal) as fh:
        json.dump(plan, fh)
    _apply_commit(plan)
    journal.unlink(missing_ok=True)
