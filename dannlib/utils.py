"""Shared helpers: device, explicit seeding (never the global generators behind the caller's back), argument checks,
the thread policy, atomic writes, paths, machine info."""
from __future__ import annotations

import contextlib
import hashlib
import math
import numbers
import operator
import os
import platform
import tempfile
from pathlib import Path
from typing import Iterator

import torch

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``device``, else ``$DANNLIB_DEVICE`` if set, else CUDA when present, else the CPU."""
    setting = "device"
    if device is None:
        setting, device = "$DANNLIB_DEVICE", os.environ.get("DANNLIB_DEVICE", "").strip()
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"{setting} must name a torch device (cpu, cuda, cuda:1, ...), got {device!r} "
                         f"({' '.join(str(exc).split())})") from None


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a block (e.g. building networks) with torch's global RNG (CPU, CUDA) seeded to ``seed``, then restore it."""
    with torch.random.fork_rng(devices=list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []):
        torch.manual_seed(int(seed))
        yield


def make_generator(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A torch.Generator on ``device`` seeded with ``seed``."""
    return torch.Generator(device=torch.device(device)).manual_seed(int(seed))


def check_positive_int(name: str, value) -> int:
    """``value`` as an int >= 1 (not a bool), or ValueError naming the parameter."""
    n = None if isinstance(value, bool) or not hasattr(value, "__index__") else operator.index(value)
    if n is None or n < 1:
        raise ValueError(f"{name} must be an integer >= 1 (a positive integer), got {value!r}")
    return n


def check_number(name: str, value, hint: str = "", *, minimum: float | None = 0.0, strict: bool = True) -> float:
    """``value`` as a float if a finite real number (not a bool) > ``minimum`` (>= for ``strict=False``;
    None: any), else ValueError naming it (and ``hint``)."""
    if (isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value)
            or minimum is not None and (value <= minimum if strict else value < minimum)):
        bound = "" if minimum is None else f" {'>' if strict else '>='} {minimum:g}"
        raise ValueError(f"{name} must be a finite number{bound}{hint}, got {value!r}")
    return float(value)


def check_seeds(seeds) -> list[int]:
    """``seeds`` as a non-empty list of distinct ints >= 0, or ValueError naming the parameter."""
    if isinstance(seeds, (int, str)) or seeds is None:
        raise ValueError(f"seeds must be a list of integers >= 0, e.g. [0, 1, 2]; got {seeds!r}")
    for s in (seeds := list(seeds)):
        if isinstance(s, bool) or not hasattr(s, "__index__") or int(s) < 0:
            raise ValueError(f"seeds must be integers >= 0, got {s!r} in {seeds!r}")
    if not seeds:
        raise ValueError("seeds must name at least one seed, e.g. seeds=[0]; got an empty list")
    if len(set(map(int, seeds))) != len(seeds):
        raise ValueError(f"seeds must not repeat, got {[int(s) for s in seeds]}")
    return [int(s) for s in seeds]


def check_choice(name: str, value, allowed):
    """``value`` if one of ``allowed``, else ValueError naming the parameter and the allowed values."""
    if value not in (allowed := list(allowed)):
        raise ValueError(f"unknown {name} {value!r}; allowed values: {', '.join(map(str, allowed))}")
    return value


def progress_enabled() -> bool:
    """False when ``$DANNLIB_PROGRESS`` is ``0`` (no progress bars: ``dann_study regenerate``'s notebooks)."""
    return os.environ.get("DANNLIB_PROGRESS", "1").strip().lower() not in ("0", "false", "no", "off")


def thread_policy(threads: int | None = None) -> int:
    """Torch threads per run on the CPU: ``threads``, else ``$DANNLIB_THREADS`` (unset or empty: 1; with runs in
    parallel processes, measured fastest on the study's 2-core CPU: benchmarks/README.md)."""
    if threads is None:
        text = os.environ.get("DANNLIB_THREADS", "").strip() or "1"
        return check_positive_int("$DANNLIB_THREADS", int(text) if text.isdecimal() else text)
    return check_positive_int("threads", threads)


def configure_threads(threads: int | None = None) -> int:
    """Set torch's thread count to :func:`thread_policy` ``(threads)``; returns it."""
    threads = thread_policy(threads)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads


def results_root(path: str | os.PathLike | None = None) -> Path:
    """``path``, else ``$DANNLIB_RESULTS``, else the project's ``results/``."""
    if path is None:
        path = os.environ.get("DANNLIB_RESULTS") or PROJECT_ROOT / "results"
    return Path(path).expanduser()


@contextlib.contextmanager
def _replacing(path: str | os.PathLike, prefix: str, suffix: str) -> Iterator[Path]:
    """A temporary file beside ``path``, renamed over it on success with a plain ``open``'s permissions
    (0666 less the umask), removed on error: ``path`` is never half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", **kwargs) -> Iterator:
    """``open(path, mode)``, atomically: writes go to ``.<name>.*.tmp`` (see :func:`_replacing`)."""
    with _replacing(path, f".{Path(path).name}.", ".tmp") as tmp, open(tmp, mode, **kwargs) as fh:
        yield fh


def atomic_path(path: str | os.PathLike) -> contextlib.AbstractContextManager:
    """Like :func:`atomic_write` but yields a temporary *path* ``.<stem>.*<suffix>`` (``fig.savefig``)."""
    return _replacing(path, f".{Path(path).stem}.", Path(path).suffix)


def file_digest(path: str | os.PathLike, algorithm: str = "md5") -> str:
    """The hex digest of a file's bytes, read in 1 MiB chunks (``hashlib.file_digest`` needs Python 3.11; we
    support 3.10)."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def cpu_model() -> str:
    """The CPU's model name (Linux's /proc/cpuinfo), else what :mod:`platform` says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: str | torch.device | None = None) -> dict:
    """What produced a number: host, platform (its kernel string tells this project's VMs apart), CPU model and
    count, device name and library versions (numpy, scipy and scikit-learn too: the label-free selection scores
    depend on them)."""
    from importlib.metadata import PackageNotFoundError, version

    import torchvision
    device = resolve_device(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    info = {"host": platform.node(), "platform": platform.platform(), "python": platform.python_version(),
            "cpu_model": cpu_model(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "device": str(device), "device_name": name, "torchvision": torchvision.__version__}
    for package in ("numpy", "scipy", "scikit-learn"):
        try:
            info[package] = version(package)
        except PackageNotFoundError:
            info[package] = None
    return info


#: Weights files found to load, by (path, size, mtime): each is read once per process.
_WEIGHTS_OK: set[tuple[str, int, int]] = set()


def weights_problem(path: Path) -> str | None:
    """Why the weights file at ``path`` does not load (truncated, not state dicts, ...), or None when
    it loads or is absent (a consumer that needs it then retrains the run)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key in _WEIGHTS_OK:
        return None
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises RuntimeError, EOFError, UnpicklingError, ... for damage
        return f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0]}"
    if not isinstance(blob, dict) or not all(isinstance(v, dict) for v in blob.values()):
        return f"it holds a {type(blob).__name__}, not the networks' state dicts"
    _WEIGHTS_OK.add(key)
    return None
