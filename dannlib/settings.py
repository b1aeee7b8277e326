"""Settings checked before any work starts (options, ``DANNLIB_WORKERS``, ``DANNLIB_SCHEDULER``, the scheduler's
reachability, output folders' writability): each raises one line naming the setting, the value and the fix."""
from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

from .utils import check_number, check_positive_int

WORKERS_ENV = "DANNLIB_WORKERS"
SCHEDULER_ENV = "DANNLIB_SCHEDULER"


def check_workers(value=None, *, setting: str = "workers") -> int:
    """Worker processes: ``value`` (option ``setting``), else ``$DANNLIB_WORKERS``, else one per core available."""
    if value is not None:
        return check_positive_int(setting, value)
    env = os.environ.get(WORKERS_ENV, "").strip()
    if not env:
        return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))
    return check_positive_int(WORKERS_ENV, int(env) if env.isdecimal() else env)


def check_time_limit(value, *, setting: str = "--time-limit", unit: str = "minutes") -> float | None:
    """``value`` (None: no limit; 0: start nothing) as a finite number >= 0 of ``unit``, or ValueError."""
    return None if value is None else check_number(setting, value, f" {unit}", strict=False)


def scheduler_setting(value: str | None) -> tuple[str | None, str]:
    """The Dask scheduler address and the setting it came from: ``value`` (``--scheduler``), else
    ``$DANNLIB_SCHEDULER``, else None (local processes)."""
    if value:
        return value, "--scheduler"
    env = os.environ.get(SCHEDULER_ENV, "").strip()
    return (env, SCHEDULER_ENV) if env else (None, "--scheduler")


def check_scheduler(address: str, *, setting: str = "--scheduler", timeout: float = 3.0) -> None:
    """ConnectionError, in one line, unless something accepts a TCP connection at a ``tcp://`` / ``tls://`` (or
    scheme-less) ``address`` within ``timeout`` seconds (a distributed Client would wait 30 s and end in a
    traceback); ValueError for an address that is not one. Other transports (``inproc://``, ...) are not probed."""
    scheme, sep, _ = address.partition("://")
    if sep and scheme not in ("tcp", "tls"):
        return
    try:
        url = urlsplit(address if sep else f"tcp://{address}")
        host, port = url.hostname, 8786 if url.port is None else url.port  # Dask's default scheduler port
    except ValueError:
        host, port = None, -1
    if not host or not 0 < port < 65536:
        raise ValueError(f"{setting} must be a Dask scheduler address tcp://HOST:PORT (or tls://HOST:PORT), "
                         f"got {address!r}")
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        why = "timed out" if isinstance(exc, socket.timeout) else (exc.strerror or str(exc))
        drop = f"unset {SCHEDULER_ENV}" if setting == SCHEDULER_ENV else "drop --scheduler"
        raise ConnectionError(
            f"{setting}: no Dask scheduler answered at {address} within {timeout:g} s ({why}); start one with "
            f"`dask scheduler` (and workers with `dask worker {address}`), or {drop} to train in local "
            "processes") from None


def check_writable(folder: str | os.PathLike, how_to_change: str) -> None:
    """PermissionError naming ``folder`` and ``how_to_change`` (the option or variable that picks it) unless a file
    can be created in it or, where it does not exist yet, in the nearest existing folder above it."""
    folder = probe = Path(folder)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise PermissionError(f"output folder {folder} cannot be created: {probe} is not a folder; "
                              f"change it with {how_to_change}")
    try:
        fd, name = tempfile.mkstemp(prefix=".write-test-", dir=probe)
    except OSError as exc:
        raise PermissionError(f"output folder {folder} is not writable ({probe}: {exc.strerror or exc}); "
                              f"change it with {how_to_change}") from None
    os.close(fd)
    os.unlink(name)
