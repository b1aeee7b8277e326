"""The run store: every training run computed once, kept as data, reused by every notebook.

A run is identified by a :class:`RunSpec`: the registered method's name, its full config, the
data spec (pair, subset sizes and seed, the MNIST-M build), the seed, the monitoring size and
:data:`STORE_FORMAT`. Its key is a hash of those. A finished run is one small JSON file,
``<store>/<method>/<key>.json``: the spec, the final evaluation, the full monitoring history,
the code version and the machine, written atomically (a temporary file renamed into place),
so a run in flight or killed is never read as finished. The trained weights go beside it,
``<key>.pt`` (git-ignored except where a later notebook needs them: see ``.gitignore``).

Bump :data:`STORE_FORMAT` whenever a change of training code changes numbers: every stored
run then counts as missing and is recomputed (``CONTRIBUTING.md``).

The default store is the project's ``results/runs`` (or ``$DANNLIB_STORE``); it is shared by
the profiles, so a run that the quick and paper profiles both need is trained once.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import subprocess
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from .results import dumps
from .utils import PROJECT_ROOT, atomic_path, atomic_write, machine_info, results_root, weights_problem

STORE_FORMAT = 1
STORE_ENV = "DANNLIB_STORE"


# -- run specs ---------------------------------------------------------------------------------
def digits_data(source: str, target: str, *, n_source: int | None = None, n_target: int | None = None,
                n_test: int | None = None, subset_seed: int = 0, size: int = 28, channels: int = 3,
                mnist_m_seed: int = 0) -> dict:
    """The data spec of a digits pair (``load_domain``'s arguments): training subsets of
    ``n_source``/``n_target`` images (None: the whole split) drawn with ``subset_seed``, test
    subsets of ``n_test``, every domain at ``size`` px and ``channels`` channels."""
    from .data import DOMAINS, MNIST_M_FORMAT_VERSION
    from .utils import check_choice

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
    from .utils import check_choice

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
            raise ValueError(f"monitor_size must be an integer >= 1 (samples per domain in each evaluation), "
                             f"got {m!r}")

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
        """``(the registered method's class, this run's config as its Config)``: the class
        answers the store's questions about the run (:class:`dannlib.training.Method`'s hooks)."""
        from .methods import METHODS

        cls = METHODS[self.method][0]
        return cls, cls.Config(**self.config)

    def dependencies(self) -> list["RunSpec"]:
        """Runs this one starts from (the method's ``dependencies``, on the same data and seed;
        e.g. ADDA's stage 2 starts from its stage 1, shared by the stage-2 variants with the
        same pre-training settings)."""
        cls, cfg = self._method()
        return [RunSpec.make(method, self.data, self.seed, monitor_size=self.monitor_size, **settings)
                for method, settings in cls.dependencies(cfg)]

    def cost_steps(self) -> float:
        """Training cost in DANN-step equivalents (the method's ``cost_steps``), for time estimates."""
        cls, cfg = self._method()
        return cls.cost_steps(cfg, self.data)


DANN_STEPS_PER_SECOND = 57.0


def estimate_seconds(specs, workers: int = 1) -> float:
    """Rough wall time of training ``specs`` on the study's CPU with ``workers`` processes."""
    total = sum(s.cost_steps() for s in specs) / DANN_STEPS_PER_SECOND
    return total / max(1, min(workers, len(list(specs)) or 1))


# -- stored runs ---------------------------------------------------------------------------------
@dataclass
class StoredRun:
    """A finished run read from the store: its spec, ``final`` evaluation, monitoring
    ``history``, timing, code version and machine."""

    spec: RunSpec
    final: dict
    history: list[dict]
    seconds: float
    code: dict
    machine: dict
    path: Path
    parts: dict = field(default_factory=dict)

    @property
    def status(self) -> str:
        """The run's status; a run stored as "ok" whose history shows an exploded loss
        (:func:`dannlib.training.judge_history`, a check newer than some stored runs) reads as
        "diverged"."""
        status = self.final.get("status", "ok")
        if status == "ok" and self.divergence:
            return "diverged"
        return status

    @functools.cached_property
    def divergence(self) -> str | None:
        from .training import judge_history

        return judge_history(self.history)

    @property
    def weights_path(self) -> Path:
        return self.path.with_suffix(".pt")

    def record(self, **extra) -> dict:
        """A flat record for the results tables: method, seed, the final metrics, status,
        steps, seconds, the run's key, config, data spec and machine, plus ``extra``."""
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
                                    "`python -m dannlib sweep --recompute ...`")
        blob = torch.load(self.weights_path, map_location="cpu", weights_only=True)
        modules = _blank_modules(self.spec)
        for name, m in modules.items():
            m.load_state_dict(blob[name])
            m.to(device).eval()
        return modules


def usable(stored: StoredRun | None) -> bool:
    """A stored run another run can start from: finished, with its weights (checked to load)."""
    return stored is not None and stored.weights_path.is_file()


def _blank_modules(spec: RunSpec) -> dict[str, torch.nn.Module]:
    """Untrained networks of the spec's architecture (the method's ``blank``; weights to be loaded)."""
    from .training import Domain

    cls, cfg = spec._method()
    d = spec.data
    shape = (2,) if d["kind"] == "toy" else (d["channels"], d["size"], d["size"])
    n = max(getattr(cfg, "batch_size", 2), 10)
    dummy = Domain("blank", torch.zeros(n, *shape), torch.arange(n) % (2 if d["kind"] == "toy" else 10))
    return cls.blank(cfg, dummy, spec.seed)


@functools.lru_cache(maxsize=1)
def code_version() -> dict:
    from . import __version__

    info = {"dannlib": __version__, "store_format": STORE_FORMAT}
    try:
        out = subprocess.run(["git", "-C", str(PROJECT_ROOT), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=5)
        if out.returncode == 0:
            info["git"] = out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return info


class Store:
    """The folder of stored runs (default: ``$DANNLIB_STORE``, else ``<results>/runs``).
    ``data_root``: where the data of its runs is now (default: ``$DANNLIB_DATA``, else
    data/), to compare with the data fingerprint a run was stored with."""

    def __init__(self, root: str | os.PathLike | None = None, data_root: str | os.PathLike | None = None):
        if root is None:
            root = os.environ.get(STORE_ENV) or results_root() / "runs"
        self.root = Path(root).expanduser()
        self.data_root = data_root

    def __repr__(self) -> str:
        return f"Store({str(self.root)!r})"

    def path(self, spec: RunSpec) -> Path:
        return self.root / spec.method / f"{spec.key}.json"

    def get(self, spec: RunSpec) -> StoredRun | None:
        """The stored run of ``spec``, or None (also, with a warning, for an unreadable or
        mismatched record, weights that do not load, or a record whose ``data_fingerprint``
        differs from the current data's: it will be recomputed)."""
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

    def put(self, spec: RunSpec, result, *, weights: bool = True, data_fingerprint: dict | None = None) -> StoredRun:
        """Store a finished :class:`~dannlib.training.RunResult` of ``spec``: the weights
        first, then the JSON file (its presence is what marks the run finished), with the
        fingerprint of the data it was trained on (:mod:`dannlib.data.fingerprint`) if given."""
        path = self.path(spec)
        if weights and result.modules:
            state = {name: {k: v.detach().cpu().contiguous() for k, v in m.state_dict().items()}
                     for name, m in result.modules.items()}
            with atomic_path(path.with_suffix(".pt")) as tmp:
                torch.save(state, tmp)
        blob = {"spec": spec.payload(), "key": spec.key, "final": result.final, "history": result.history,
                "seconds": result.seconds, "code": code_version(), "machine": machine_info()}
        if data_fingerprint:
            blob["data_fingerprint"] = data_fingerprint
        with atomic_write(path) as fh:
            fh.write(dumps(blob) + "\n")
        return self.get(spec)

    def clean_partial(self, min_age: float = 120.0) -> int:
        """Remove temporary files left by killed writers (never a finished run): the hidden
        ``.<key>.json.*.tmp`` and ``.<key>.*.pt`` beside the runs, untouched for ``min_age``
        seconds (younger ones may belong to a writer still at work, e.g. another sweep on the
        same store: removing those would make its rename fail)."""
        import time

        n = 0
        if self.root.is_dir():
            now = time.time()
            for p in [*self.root.glob("*/.*.tmp"), *self.root.glob("*/.*.pt")]:
                try:
                    if now - p.stat().st_mtime < min_age:
                        continue
                    p.unlink()
                except FileNotFoundError:
                    continue
                n += 1
        return n


    def stored_keys(self) -> dict[str, list[Path]]:
        """Every finished run's key -> its files (record and weights)."""
        out: dict[str, list[Path]] = {}
        if self.root.is_dir():
            for p in sorted(self.root.glob("*/*.json")) + sorted(self.root.glob("*/*.pt")):
                if not p.name.startswith("."):
                    out.setdefault(p.stem, []).append(p)
        return out

    def prune(self, keep: set[str], dry_run: bool = False) -> list[Path]:
        """Remove the runs whose key is not in ``keep`` (record and weights); returns the
        removed (with ``dry_run``: the removable) files."""
        gone = [p for key, paths in self.stored_keys().items() if key not in keep for p in paths]
        if not dry_run:
            for p in gone:
                p.unlink(missing_ok=True)
        return gone


def __getattr__(name):  # a sweep started before the worker entry point moved to dannlib.pool
    if name == "_worker_compute":
        from .pool import _worker_compute
        return _worker_compute
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# -- computing one run ------------------------------------------------------------------------
@functools.lru_cache(maxsize=4)
def _load_data(data_json: str, data_root: str | None):
    from .training import Domain

    d = json.loads(data_json)
    if d["kind"] == "toy":
        from .toys import make_toy

        kw = {k: v for k, v in d.items() if k not in ("kind", "toy")}
        pr = make_toy(d["toy"], **kw)
        src = Domain(f"{d['toy']} source", torch.tensor(pr.xs), torch.tensor(pr.ys))
        tgt = Domain(f"{d['toy']} target", torch.tensor(pr.xt), torch.tensor(pr.yt))
        return src, tgt, {"source": src, "target": tgt}
    from .data import load_domain

    common = dict(size=d["size"], channels=d["channels"], seed=d["subset_seed"],
                  mnist_m_seed=d.get("mnist_m", {}).get("seed", 0))
    xs, ys = load_domain(d["source"], "train", data_root, n=d["n_source"], **common)
    xt, yt = load_domain(d["target"], "train", data_root, n=d["n_target"], **common)
    xse, yse = load_domain(d["source"], "test", data_root, n=d["n_test"], **common)
    xte, yte = load_domain(d["target"], "test", data_root, n=d["n_test"], **common)
    return (Domain(d["source"], xs, ys), Domain(d["target"], xt, yt),
            {"source_test": Domain(d["source"], xse, yse), "target_test": Domain(d["target"], xte, yte)})


def load_data(data: dict, data_root=None):
    """``(source, target (labelled), eval_sets)`` of a data spec, cached per process."""
    return _load_data(dumps(data), None if data_root is None else str(data_root))


def compute(spec: RunSpec, store: Store, *, data_root=None, progress: bool = True) -> StoredRun:
    """Train ``spec`` (and, first, any missing run it depends on), store it, return it."""
    from .data.fingerprint import current_fingerprint
    from .methods import ORACLES, train

    pretrained = None
    for dep in spec.dependencies():
        stored = store.get(dep)
        if not usable(stored):
            stored = compute(dep, store, data_root=data_root, progress=progress)
        pretrained = [_as_run_result(stored)]
    source, target, eval_sets = load_data(spec.data, data_root)
    fingerprint = current_fingerprint(spec.data, data_root)
    if spec.method in ORACLES:
        source = target  # the labelled target training set: an upper bound, not adaptation
    (result,) = train(spec.method, source, target.unlabelled(), seeds=[spec.seed], eval_sets=eval_sets,
                      progress=progress, monitor_size=spec.monitor_size, pretrained=pretrained, **spec.config)
    from .selection import SELECTION_FIELD, score_trained, scoreable

    if spec.data["kind"] == "digits" and scoreable(result.modules):  # label-free scores and oracle (notebook 07)
        result.final[SELECTION_FIELD] = score_trained(result.modules, eval_sets, target.unlabelled().x)
    return store.put(spec, result, data_fingerprint=fingerprint)


def _as_run_result(stored: StoredRun):
    from .training import RunResult

    return RunResult(method=stored.spec.method, seed=stored.spec.seed, config=stored.spec.config,
                     history=stored.history, final=stored.final, seconds=stored.seconds,
                     steps=stored.final.get("steps", 0), modules=stored.load_modules())

