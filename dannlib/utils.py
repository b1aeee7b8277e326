"""Small shared helpers: the device choice, explicit seeding, atomic file writes, paths.

Everything here is stateless apart from what its caller passes in: no helper reseeds the
global random number generators behind the caller's back (``seeded`` restores them).
"""
from __future__ import annotations

import contextlib
import math
import os
import platform
import tempfile
from pathlib import Path
from typing import Iterator

import torch

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _publish(tmp: str | os.PathLike, target: Path) -> None:
    """Give a finished temporary file the permissions a plain ``open(..., "w")`` would
    (0666 less the umask; mkstemp makes it 0600), then rename it over ``target``."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, target)


def default_device() -> torch.device:
    """The one place the training device is chosen: ``$DANNLIB_DEVICE`` if set, else CUDA
    when present, else the CPU."""
    name = os.environ.get("DANNLIB_DEVICE")
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_device(device: str | torch.device | None) -> torch.device:
    return default_device() if device is None else torch.device(device)


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a block with torch's global RNG (CPU and CUDA) seeded to ``seed``, then restore
    the caller's RNG state. Used to build networks whose layers draw their initial weights
    from the global generator, without leaving the global state changed."""
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(seed))
        yield


def make_generator(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A torch.Generator on ``device`` seeded with ``seed`` (explicit randomness)."""
    g = torch.Generator(device=torch.device(device))
    g.manual_seed(int(seed))
    return g


def check_positive_int(name: str, value) -> int:
    """Return ``value`` as int, or raise ValueError naming the parameter."""
    import operator

    try:
        if isinstance(value, bool):
            raise TypeError
        value = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be a positive integer, got {value!r}") from None
    if value <= 0:
        raise ValueError(f"{name} must be a positive integer (>= 1), got {value}")
    return value


def check_positive_number(name: str, value, hint: str = "") -> float:
    """Return ``value`` if it is a finite real number > 0 (not a bool), else raise
    ValueError naming the parameter; ``hint`` is added after "> 0" in the message."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0{hint}, got {value!r}")
    return value


def check_seeds(seeds) -> list[int]:
    """``seeds`` as a non-empty list of ints >= 0, or a ValueError naming the parameter."""
    if isinstance(seeds, (int, str)) or seeds is None:
        raise ValueError(f"seeds must be a list of integers >= 0, e.g. [0, 1, 2]; got {seeds!r}")
    out = []
    for s in seeds:
        if isinstance(s, bool) or not isinstance(s, int) and not (hasattr(s, "__index__")):
            raise ValueError(f"seeds must be integers >= 0, got {s!r} in {list(seeds)!r}")
        s = int(s)
        if s < 0:
            raise ValueError(f"seeds must be integers >= 0, got {s} in {list(seeds)!r}")
        out.append(s)
    if not out:
        raise ValueError("seeds must name at least one seed, e.g. seeds=[0]; got an empty list")
    if len(set(out)) != len(out):
        raise ValueError(f"seeds must not repeat, got {out}")
    return out


def progress_enabled() -> bool:
    """False when ``$DANNLIB_PROGRESS`` is ``0`` (no progress bars at all, e.g. inside
    notebooks executed by ``dannlib regenerate``), else True."""
    return os.environ.get("DANNLIB_PROGRESS", "1").strip().lower() not in ("0", "false", "no", "off")


THREADS_ENV = "DANNLIB_THREADS"


def configure_threads(threads: int | None = None) -> int:
    """The study's one thread policy for torch on the CPU, called by the notebooks, the CLI,
    the sweep's workers and the tests: ``threads`` if given, else ``$DANNLIB_THREADS``, else
    1. Measured on the 2-core CPU the study runs on: one torch thread per process, with
    runs in parallel processes, beats 2 threads in one process (``benchmarks/README.md``);
    on a shared machine 2 threads collapsed. Returns the number set."""
    if threads is None:
        text = os.environ.get(THREADS_ENV, "1")
        try:
            threads = int(text)
        except ValueError:
            raise ValueError(f"${THREADS_ENV} must be a positive integer, got {text!r}") from None
    threads = check_positive_int("threads", threads)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads


def results_root(path: str | os.PathLike | None = None) -> Path:
    """The results folder: ``path`` if given, else ``$DANNLIB_RESULTS``, else the project's
    ``results/`` (found from this file, so it works from any working directory)."""
    if path is not None:
        return Path(path).expanduser()
    env = os.environ.get("DANNLIB_RESULTS")
    return Path(env).expanduser() if env else PROJECT_ROOT / "results"


def check_choice(name: str, value, allowed) -> None:
    """Raise ValueError naming the parameter and the allowed values."""
    allowed = list(allowed)
    if value not in allowed:
        raise ValueError(f"unknown {name} {value!r}; allowed values: {', '.join(map(str, allowed))}")


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", **kwargs) -> Iterator:
    """Open a temporary file beside ``path`` for writing; on success rename it over
    ``path``; on error remove it, so ``path`` is never half-written and an earlier version
    survives a failure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with open(tmp, mode, **kwargs) as fh:
            yield fh
        _publish(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_path(path: str | os.PathLike) -> contextlib.AbstractContextManager:
    """Like ``atomic_write`` but yields a temporary *path* (for writers that take a file
    name, e.g. ``np.savez`` or ``fig.savefig``), renamed over ``path`` on success."""

    @contextlib.contextmanager
    def _ctx():
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=target.suffix, dir=target.parent)
        os.close(fd)
        try:
            yield Path(tmp)
            _publish(tmp, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    return _ctx()


def machine_info(device: str | torch.device | None = None) -> dict:
    """What produced a number: host, CPU count, device name and library versions."""
    device = resolve_device(device)
    info = {
        "host": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "device": str(device),
    }
    if device.type == "cuda":
        info["device_name"] = torch.cuda.get_device_name(device)
    else:
        info["device_name"] = platform.processor() or platform.machine()
    try:
        import torchvision

        info["torchvision"] = torchvision.__version__
    except Exception:  # pragma: no cover - torchvision is a dependency
        pass
    return info


#: Weights files found to load, by (path, size, mtime): each is read once per process.
_WEIGHTS_OK: set[tuple[str, int, int]] = set()


def weights_problem(path: Path) -> str | None:
    """Why the weights file at ``path`` does not load (truncated, not a torch archive, not state
    dicts), or None when it loads or is absent (then a consumer that needs it retrains the run)."""
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
        lines = str(exc).strip().splitlines()
        return f"{type(exc).__name__}: {lines[0] if lines else ''}"
    if not isinstance(blob, dict) or not all(isinstance(v, dict) for v in blob.values()):
        return f"it holds a {type(blob).__name__}, not the networks' state dicts"
    _WEIGHTS_OK.add(key)
    return None
