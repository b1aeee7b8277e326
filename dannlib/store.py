"""The run store: every training run computed once, kept as data, reused by every notebook.

A run is a :class:`RunSpec` (method, full config, data spec, seed, monitoring size and :data:`STORE_FORMAT`); its key is
a hash of those. A finished run is ``<store>/<method>/<key>.json`` (spec, final evaluation, monitoring history, code
version, machine), written atomically, with its weights beside it as ``<key>.pt``. Bump :data:`STORE_FORMAT` whenever a
change of training code changes numbers: every stored run then counts as missing (``CONTRIBUTING.md``). The default
store, ``results/runs`` (or ``$DANNLIB_STORE``), is shared by the profiles.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import os
import re
import subprocess
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .results import dumps
from .utils import (PROJECT_ROOT, atomic_path, atomic_write, check_choice, configure_threads, machine_info,
                    resolve_device, results_root, seeded, weights_problem)

STORE_FORMAT = 1
#: the paper's DANN step (digits network, fp32, 32 + 32) per second: the unit of ``cost_steps``; 57 until
#: 2026-12-02; notebook 09's grid measured 47 with 4 evaluations a run (2 workers on the 2-core VM), 48.5 without
DANN_STEPS_PER_SECOND = 48.5
#: a test image's forward pass in DANN steps: 2,000 cost 17.2 steps (benchmarks/README.md, "The sweep's estimate")
EVAL_STEPS_PER_IMAGE = 17.2 / 2000
#: seconds a digits run costs besides its steps: loading its data in the worker, the input mean, the final
#: evaluation, the label-free scores (notebook 09's grid: 5-14 s)
DIGITS_RUN_OVERHEAD = 8.0

#: :func:`probe_steps_per_second` on the VM whose sweeps set the rates above, inferred on 2026-12-03 from a faster VM
#: (benchmarks/README.md, "The sweep's estimate on another machine")
PROBE_REFERENCE_STEPS_PER_SECOND = 38.0


def probe_steps_per_second(steps: int = 25, rounds: int = 4) -> float:
    """This machine's DANN steps a second on one thread: the digits network, fp32 SGD, 32 + 32 synthetic images, the
    best of ``rounds`` blocks of ``steps`` after two blocks of warm-up (about three seconds)."""
    import torch.nn.functional as F

    from .networks import digits_net
    threads = torch.get_num_threads()
    configure_threads(1)
    try:
        with seeded(0):
            net = digits_net().to(memory_format=torch.channels_last)
            x, y, d = torch.rand(64, 3, 28, 28), torch.randint(0, 10, (32,)), torch.arange(64).ge(32).float()
        optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
        best = math.inf
        for block in range(rounds + 2):
            start = time.perf_counter()
            for _ in range(steps):
                optimizer.zero_grad()
                logits, domain = net(x, 1.0)
                (F.cross_entropy(logits[:32], y) + F.binary_cross_entropy_with_logits(domain, d)).backward()
                optimizer.step()
            if block >= 2:  # the first two blocks warm up
                best = min(best, (time.perf_counter() - start) / steps)
    finally:
        torch.set_num_threads(threads)
    return 1 / best


def speed_setting() -> float | None:
    """``$DANNLIB_SPEED`` as a number > 0, None where unset or empty; ValueError for anything else."""
    if not (text := os.environ.get("DANNLIB_SPEED", "").strip()):
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"$DANNLIB_SPEED must be a number > 0 (this machine's speed relative to the CPU the "
                         f"study's rates were measured on; unset: measured), got {text!r}")
    return value


@functools.cache
def machine_speed() -> float:
    """How many times faster this machine trains than the one whose sweeps set the rates: ``$DANNLIB_SPEED`` if set
    (1: price runs as on that machine), else :func:`probe_steps_per_second` over
    :data:`PROBE_REFERENCE_STEPS_PER_SECOND`. Measured once a process; :func:`run_cost_seconds` divides by it."""
    if (value := speed_setting()) is not None:
        return value
    if (device := resolve_device()).type != "cpu":
        warnings.warn(f"the sweep's estimate is priced for the study's CPU; runs here train on {device}, which the "
                      "CPU probe does not measure (set DANNLIB_SPEED to scale it)", stacklevel=2)
        return 1.0
    try:
        speed = probe_steps_per_second() / PROBE_REFERENCE_STEPS_PER_SECOND
    except Exception as exc:  # an estimate must not stop a sweep
        warnings.warn(f"the speed probe failed ({type(exc).__name__}: {exc}); the estimate is priced as on the "
                      "study's reference CPU", stacklevel=2)
        return 1.0
    return speed if math.isfinite(speed) and speed > 0 else 1.0


def digits_data(source: str, target: str, *, n_source: int | None = None, n_target: int | None = None,
                n_test: int | None = None, subset_seed: int = 0, size: int = 28, channels: int = 3,
                mnist_m_seed: int = 0) -> dict:
    """The data spec of a digits pair (``load_domain``'s arguments); None sizes: the whole split."""
    from .data import DOMAINS, MNIST_M_FORMAT_VERSION
    check_choice("source", source, DOMAINS)
    check_choice("target", target, DOMAINS)
    spec = {"kind": "digits", "source": source, "target": target, "n_source": n_source, "n_target": n_target,
            "n_test": n_test, "subset_seed": subset_seed, "size": size, "channels": channels}
    if "mnist_m" in (source, target):
        spec["mnist_m"] = {"seed": mnist_m_seed, "format": MNIST_M_FORMAT_VERSION}
    if "mnist_m_released" in (source, target):
        from .data.mnist_m_released import RELEASED_FORMAT_VERSION
        spec["mnist_m_released"] = {"format": RELEASED_FORMAT_VERSION}
    return spec


def toy_data(toy: str, **kwargs) -> dict:
    """The data spec of a toy problem (:func:`dannlib.toys.make_toy`'s arguments)."""
    from .toys import TOYS
    check_choice("toy", toy, TOYS)
    return {"kind": "toy", "toy": toy, **kwargs}


@dataclass(frozen=True)
class RunSpec:
    """One training run. Build it with :meth:`make` (which fills the full config)."""

    method: str
    config: dict
    data: dict
    seed: int
    monitor_size: int = 2000

    def __post_init__(self):
        m = self.monitor_size
        if isinstance(m, bool) or not isinstance(m, int) or m < 1:
            raise ValueError(f"monitor_size must be an integer >= 1 (samples per domain in each evaluation), got {m!r}")

    @classmethod
    def make(cls, method: str, data: dict, seed: int, *, monitor_size: int = 2000, **overrides) -> "RunSpec":
        from .methods import make_config
        cfg = make_config(method, **overrides)
        if isinstance(seed, bool) or int(seed) != seed or seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
        if hasattr(monitor_size, "__index__") and not isinstance(monitor_size, bool):
            monitor_size = monitor_size.__index__()  # numpy integers too; anything else is refused
        return cls(method, json.loads(dumps(asdict(cfg))), json.loads(dumps(data)), int(seed), monitor_size)

    def payload(self) -> dict:
        return {"store_format": STORE_FORMAT, "method": self.method, "config": self.config, "data": self.data,
                "seed": self.seed, "monitor_size": self.monitor_size}

    @functools.cached_property
    def key(self) -> str:
        return hashlib.sha256(dumps(self.payload()).encode()).hexdigest()[:20]

    def __hash__(self) -> int:
        return hash(self.key)

    def __eq__(self, other) -> bool:
        return isinstance(other, RunSpec) and self.key == other.key

    @property
    def label(self) -> str:
        return f"{self.method} seed {self.seed}"

    def _method(self):
        """``(the registered method's class, this run's config as its Config)``."""
        from .methods import METHODS
        cls = METHODS[self.method][0]
        return cls, cls.Config(**self.config)

    def dependencies(self) -> list["RunSpec"]:
        """Runs this one starts from (e.g. ADDA's stage 2 from its stage 1), same data and seed."""
        cls, cfg = self._method()
        return [RunSpec.make(method, self.data, self.seed, monitor_size=self.monitor_size, **settings)
                for method, settings in cls.dependencies(cfg)]

    def cost_steps(self) -> float:
        """Training cost in DANN-step equivalents (the method's ``cost_steps``), for time estimates; a digits
        run's monitoring evaluations added (``fit``'s: 20 by default, each on two test sets)."""
        cls, cfg = self._method()
        cost = cls.cost_steps(cfg, self.data)
        if self.data.get("kind") != "digits":
            return cost
        steps = cls.total_steps(cfg)
        every = getattr(cfg, "eval_every", None) or max(1, steps // 20)
        images = 2 * min(self.monitor_size, self.data.get("n_test") or self.monitor_size)
        return cost + -(-steps // every) * images * EVAL_STEPS_PER_IMAGE  # fit also evaluates at the last step


def run_cost_seconds(spec: RunSpec) -> float:
    """One run's estimated seconds on this machine: its steps and evaluations at its method's measured rate, plus
    :data:`DIGITS_RUN_OVERHEAD` for a digits run, as on the study's CPU, divided by :func:`machine_speed`."""
    seconds = spec.cost_steps() / DANN_STEPS_PER_SECOND + DIGITS_RUN_OVERHEAD * (spec.data.get("kind") == "digits")
    return seconds / machine_speed()


def estimate_seconds(specs, workers: int = 1) -> float:
    """Rough wall time of training ``specs`` (one phase of a sweep) with ``workers`` processes: the runs dealt
    longest first to the least loaded worker, as the sweep hands them out; the most loaded worker's total."""
    costs = sorted((run_cost_seconds(s) for s in specs), reverse=True)
    loads = [0.0] * max(1, min(workers, len(costs)))
    for cost in costs:
        loads[loads.index(min(loads))] += cost
    return max(loads)


@dataclass
class StoredRun:
    """A finished run read from the store."""

    spec: RunSpec
    final: dict
    history: list[dict]
    seconds: float
    code: dict
    machine: dict
    path: Path

    @property
    def status(self) -> str:
        """The stored status; "diverged" for an "ok" run whose history shows an exploded loss."""
        status = self.final.get("status", "ok")
        return "diverged" if status == "ok" and self.divergence else status

    @functools.cached_property
    def divergence(self) -> str | None:
        from .training import judge_history
        return judge_history(self.history)

    @property
    def weights_path(self) -> Path:
        return self.path.with_suffix(".pt")

    def record(self, **extra) -> dict:
        """A flat record for the tables: method, seed, final metrics, key, config, data, machine, ``extra``."""
        rec = {"method": self.spec.method, "seed": self.spec.seed, **self.final, "key": self.spec.key,
               "config": self.spec.config, "data": self.spec.data, "machine": self.machine}
        if rec.get("status", "ok") == "ok" and self.status != "ok":
            rec["status"] = self.status
            rec["message"] = f"{self.spec.method}: loss exploded ({self.divergence}); recorded as diverged"
        rec.update(extra)
        return rec

    def load_modules(self, device="cpu") -> dict[str, torch.nn.Module]:
        """The trained networks (eval mode), rebuilt from the spec and the saved weights."""
        if not self.weights_path.is_file():
            raise FileNotFoundError(f"no weights for {self.spec.label} at {self.weights_path}; they are kept "
                                    "only where a later notebook needs them: recompute the run with "
                                    "`python -m dann_study sweep --recompute ...`")
        from .training import Domain
        blob = torch.load(self.weights_path, map_location="cpu", weights_only=True)
        cls, cfg = self.spec._method()
        d = self.spec.data
        shape = (2,) if d["kind"] == "toy" else (d["channels"], d["size"], d["size"])
        n = max(getattr(cfg, "batch_size", 2), 10)
        dummy = Domain("blank", torch.zeros(n, *shape), torch.arange(n) % (2 if d["kind"] == "toy" else 10))
        modules = cls.blank(cfg, dummy, self.spec.seed)
        for name, m in modules.items():
            m.load_state_dict(blob[name])
            m.to(device).eval()
        return modules


def usable(stored: StoredRun | None) -> bool:
    """A stored run another run can start from: finished, with its weights."""
    return stored is not None and stored.weights_path.is_file()


@functools.lru_cache(maxsize=1)
def code_version() -> dict:
    from . import __version__
    info = {"dannlib": __version__, "store_format": STORE_FORMAT}
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(["git", "-C", str(PROJECT_ROOT), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=5)
        if out.returncode == 0:
            info["git"] = out.stdout.strip()
    return info


def store_root(results: str | os.PathLike | None = None) -> Path:
    """The default run store, absolute (a relative one is read from the working folder now, not a notebook kernel's):
    ``$DANNLIB_STORE``, else ``<results>/runs`` (``results``: see :func:`results_root`)."""
    return Path(os.environ.get("DANNLIB_STORE", "").strip() or results_root(results) / "runs").expanduser().absolute()


class Store:
    """The folder of stored runs (default: ``$DANNLIB_STORE``, else ``<results>/runs``).
    ``data_root``: where the data is now, to compare with a run's stored data fingerprint."""

    def __init__(self, root: str | os.PathLike | None = None, data_root: str | os.PathLike | None = None):
        self.root = store_root() if root is None else Path(root).expanduser()
        self.data_root = data_root

    def path(self, spec: RunSpec) -> Path:
        return self.root / spec.method / f"{spec.key}.json"

    def get(self, spec: RunSpec) -> StoredRun | None:
        """The stored run of ``spec``, or None (with a warning for an unreadable or mismatched
        record, weights that do not load, or other data than the data root holds now)."""
        from .data.fingerprint import current_fingerprint, fingerprint_mismatch
        path = self.path(spec)
        if not path.is_file():
            return None
        try:
            blob = json.loads(path.read_text())
            if not isinstance(blob, dict):
                raise ValueError(f"it holds a JSON {type(blob).__name__}, not a run")
            if blob["spec"] != json.loads(dumps(spec.payload())):
                raise ValueError("its spec differs from the one asked for")
            if not isinstance(blob["final"], dict) or not isinstance(blob["history"], list):
                raise ValueError("its final evaluation or history is malformed")
            run = StoredRun(spec=spec, final=blob["final"], history=blob["history"], seconds=blob["seconds"],
                            code=blob.get("code", {}), machine=blob.get("machine", {}), path=path)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            warnings.warn(f"ignoring the stored run {path} ({type(exc).__name__}: {exc}); it will be recomputed",
                          stacklevel=2)
            return None
        problem = weights_problem(run.weights_path)
        if problem:
            problem = f"its weights {run.weights_path.name} do not load ({problem})"
        elif blob.get("data_fingerprint"):
            changed = fingerprint_mismatch(blob["data_fingerprint"], current_fingerprint(spec.data, self.data_root))
            problem = changed and f"it was trained on other data than the data root now holds ({changed})"
        if problem:
            warnings.warn(f"ignoring the stored run {path}: {problem}; it will be recomputed", stacklevel=2)
            return None
        return run

    def put(self, spec: RunSpec, result, *, data_fingerprint: dict | None = None) -> StoredRun:
        """Store a finished :class:`~dannlib.training.RunResult`: the weights first, then the JSON file (whose
        presence marks the run finished), with the data fingerprint if given. A recomputed run's old JSON is moved
        aside (``.<key>.json.*.tmp``, removed by :meth:`clean_partial`) just before its new weights replace the old:
        a kill between the two writes leaves the run missing, never the old record beside the new weights."""
        path, aside = self.path(spec), None
        if result.modules:
            state = {name: {k: v.detach().cpu().contiguous() for k, v in m.state_dict().items()}
                     for name, m in result.modules.items()}
            with atomic_path(path.with_suffix(".pt")) as tmp:
                torch.save(state, tmp)
                if path.exists():
                    os.replace(path, aside := path.with_name(f".{path.name}.{os.getpid()}.replaced.tmp"))
        blob = {"spec": spec.payload(), "key": spec.key, "final": result.final, "history": result.history,
                "seconds": result.seconds, "code": code_version(), "machine": machine_info()}
        if data_fingerprint:
            blob["data_fingerprint"] = data_fingerprint
        with atomic_write(path) as fh:
            fh.write(dumps(blob) + "\n")
        if aside is not None:
            aside.unlink(missing_ok=True)
        return self.get(spec)

    def clean_partial(self, min_age: float = 120.0) -> int:
        """Remove killed writers' temporary files (``.<key>.json.*.tmp``, ``.<key>.*.pt``)
        untouched for ``min_age`` seconds (younger ones may belong to a writer at work)."""
        n = 0
        for p in [*self.root.glob("*/.*.tmp"), *self.root.glob("*/.*.pt")]:
            with contextlib.suppress(FileNotFoundError):
                if time.time() - p.stat().st_mtime >= min_age:
                    p.unlink()
                    n += 1
        return n

    def prune(self, keep: set[str], dry_run: bool = False) -> list[Path]:
        """Remove (with ``dry_run``: list) the files (record, weights) of the runs whose key is not in ``keep``: only
        files named as runs are (``<method>/<key>.json``, ``.pt``; a key is 20 hex digits), so a folder given as the
        store by mistake (e.g. ``results/``) loses nothing else."""
        gone = [p for p in sorted(self.root.glob("*/*.json")) + sorted(self.root.glob("*/*.pt"))
                if re.fullmatch(r"[0-9a-f]{20}", p.stem) and p.stem not in keep]
        if not dry_run:
            for p in gone:
                p.unlink(missing_ok=True)
        return gone


@functools.lru_cache(maxsize=4)
def _load_data(data_json: str, data_root: str | None):
    from .training import Domain
    d = json.loads(data_json)
    if d["kind"] == "toy":
        from .toys import make_toy
        pr = make_toy(d["toy"], **{k: v for k, v in d.items() if k not in ("kind", "toy")})
        src = Domain(f"{d['toy']} source", torch.tensor(pr.xs), torch.tensor(pr.ys))
        tgt = Domain(f"{d['toy']} target", torch.tensor(pr.xt), torch.tensor(pr.yt))
        return src, tgt, {"source": src, "target": tgt}
    from .data import load_domain
    common = dict(size=d["size"], channels=d["channels"], seed=d["subset_seed"],
                  mnist_m_seed=d.get("mnist_m", {}).get("seed", 0))
    dom = {(name, split): Domain(d[name], *load_domain(d[name], split, data_root, n=d[n], **common))
           for name, split, n in (("source", "train", "n_source"), ("target", "train", "n_target"),
                                  ("source", "test", "n_test"), ("target", "test", "n_test"))}
    return (dom["source", "train"], dom["target", "train"],
            {"source_test": dom["source", "test"], "target_test": dom["target", "test"]})


def load_data(data: dict, data_root=None):
    """``(source, target (labelled), eval_sets)`` of a data spec, cached per process."""
    return _load_data(dumps(data), None if data_root is None else str(data_root))
