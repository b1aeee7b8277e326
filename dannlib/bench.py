"""``python -m dannlib bench``: training throughput of the digits networks, several ways,
measured in ONE run so that they can be compared as ratios on a shared, noisy machine.

Throughput (``python -m dannlib bench [options]``):

- (a) ``dataloader``: the usual peer-style pipeline, written here only as the baseline: a
  per-sample ``torch.utils.data.Dataset`` (uint8 image -> PIL -> ``to_tensor`` -> mean
  subtraction, as torchvision's MNIST + ``ToTensor`` does), two ``DataLoader`` s (source,
  target; ``num_workers=2``, ``shuffle=True``, batch 32 each) zipped, and a hand-written
  DANN step with the same network (:func:`dannlib.networks.digits_net`), optimiser (SGD,
  momentum 0.9, eq. 7's rate) and gradient reversal (eq. 6's lambda).
- (b) ``fit``: dannlib's default loop, :func:`dannlib.training.fit` with
  :class:`dannlib.methods.DANN` for one seed (eager; batches gathered by index from
  tensors already on the device).
- (c) ``fit_K``: dannlib's fastest multi-seed mode on the device, for K seeds: the faster
  of ``together`` (K seeds as one ``torch.func.vmap`` model, one ``fit``) and ``separate``
  (K single-seed ``fit`` s one after another: the code path of (b), so its seed-steps/s
  *is* (b)'s, not measured twice).
- ``fit_contiguous``: (b) with ``channels_last=False``, to show what the channels_last
  convolution weights (DANN's default on the CPU) gain.
- ``--precision fp32,bf16`` (the default): every timed method also in bfloat16 autocast
  (``TrainConfig.precision="bf16"``), e.g. ``fit_bf16``; ``--methods dann,iimt,adda_gan``
  adds IIMT's step and ADDA's stage 2 (LeNet, batch 128, one channel) in each precision.
  ``bf16_conv`` (DANN, IIMT; an experiment of this benchmark, not a dannlib setting):
  only the convolutional feature extractor under bf16 autocast, the fc layers and the
  losses in float32.

The data are synthetic random images (``(N, C, 28, 28)`` in [0, 1], random labels): the
throughput of a step does not depend on the pixel values, and no data set is needed.

Each variant is built and warmed up once; then ``--repeats`` rounds each time ``--steps``
steps of every variant in turn (a b c a b c ...), and the medians are reported. The
optimiser steps each variant performs are counted (a hook on its optimiser), and a round
that did not perform exactly ``--steps`` steps is an error. Throughput: steps/s (optimiser
steps), seed-steps/s (steps x seeds trained by one step; the unit that compares one seed
with K seeds) and images/s (seed-steps x 2 x batch). With ``--threads 1,2`` every round
also cycles through the thread counts. Threads are set through
:func:`dannlib.utils.configure_threads` (default: its policy) and restored afterwards.

Accuracy of bf16 (``python -m dannlib bench accuracy [options]``): DANN on MNIST ->
MNIST-M trained in each precision for the same steps and seeds; the target test accuracy
of every run goes to ``results/bench/precision-accuracy.json``.

Processes against threads for a sweep (``python -m dannlib bench sweep [--runs 4] [--steps 400]
[--repeats 3] [--cores 2] [--data digits|toy]``): the same K short DANN runs (MNIST -> MNIST-M,
``--n-train`` 2000 images per domain, ``--n-test`` 500, batch 32, seeds 0..K-1) trained by
:func:`dannlib.sweep.ensure` three ways, each into a fresh temporary store, interleaved round by
round (the order rotates): (a) ``processes``, ``workers=cores`` (one torch thread each, the
sweep's default); (b) ``threads``, ``workers=1`` after ``configure_threads(cores)``; (c)
``serial``, ``workers=1`` at one thread. A round times the whole ``ensure`` call (worker start-up
and data loading included; the data caches are cleared first) and checks that the store ends
with exactly the K runs asked for. Reported: runs/minute (median over rounds; also "in-run",
from ``fit``'s own timer, without the once-per-worker start-up), the ratios a/b, a/c, b/c, the
load averages and the command, in ``results/bench/bench-sweep-<data>.json``.

Besides wall-clock seconds every round records the process's CPU seconds
(``time.process_time``): with one intra-op thread, CPU time does not count the time the
process waits for a core held by other users, so its ratios are steadier on a shared
machine (it does not count DataLoader worker processes: compare the baseline on wall time).
"""
from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from torch import nn

from . import methods, networks
from .grl import grad_reverse
from .methods.adda import SourcePretrain
from .methods.common import PRECISIONS
from .schedules import annealed_lr, grl_lambda
from .training import Domain, fit
from .utils import (PROJECT_ROOT, atomic_write, check_choice, check_positive_int, check_seeds, configure_threads, machine_info,
                    resolve_device, seeded)

BATCH = 32          # per domain, as in DANNConfig
N_IMAGES = 2048     # synthetic images per domain
IMAGE_SHAPE = (3, 28, 28)
#: the methods whose step can be timed in each precision: name -> (batch per domain, channels)
TIMED_METHODS = {"dann": (BATCH, 3), "iimt": (BATCH, 3), "adda_gan": (128, 1)}
#: dannlib's precisions plus this benchmark's experiment (see _AutocastFeatures)
BENCH_PRECISIONS = PRECISIONS + ("bf16_conv",)
BENCH_DIR = PROJECT_ROOT / "results" / "bench"


# -- optimiser-step counting -----------------------------------------------------------------
class StepCounter:
    """Counts the ``step()`` calls of one optimiser (a post-step hook): what a variant really
    did, so that a variant that silently skips its steps cannot look fast."""

    def __init__(self, optimizer: torch.optim.Optimizer):
        self.count = 0
        optimizer.register_step_post_hook(self._hook)

    def _hook(self, *_):
        self.count += 1


# -- (a) the peer-style baseline ---------------------------------------------------------
class _ImageDataset(torch.utils.data.Dataset):
    """Per-sample access, as torchvision's digit sets: uint8 ``(N, 28, 28, 3)`` images,
    each returned as a float ``(3, 28, 28)`` tensor in [0, 1] minus the per-pixel mean."""

    def __init__(self, images: np.ndarray, labels: np.ndarray | None, mean: torch.Tensor):
        self.images, self.labels, self.mean = images, labels, mean

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i):
        from PIL import Image
        from torchvision.transforms.functional import to_tensor

        x = to_tensor(Image.fromarray(self.images[i])) - self.mean
        return (x, int(self.labels[i])) if self.labels is not None else x


class _DataLoaderBaseline:
    """The baseline DANN loop: two zipped DataLoaders, batches moved to the device, one
    eager SGD step per pair (eq. 1/5 with batch means; lambda eq. 6, learning rate eq. 7)."""

    seeds = 1

    def __init__(self, images_s, labels_s, images_t, device, seed: int, num_workers: int):
        self.device = device
        mean = torch.from_numpy(np.concatenate([images_s, images_t])).float().mean(0).permute(2, 0, 1) / 255
        g = torch.Generator().manual_seed(seed)
        kw = dict(batch_size=BATCH, shuffle=True, drop_last=True, num_workers=num_workers,
                  persistent_workers=num_workers > 0, generator=g)
        self.loader_s = torch.utils.data.DataLoader(_ImageDataset(images_s, labels_s, mean), **kw)
        self.loader_t = torch.utils.data.DataLoader(_ImageDataset(images_t, None, mean), **kw)
        with seeded(seed):
            self.net = networks.digits_net(in_channels=3, size=28).to(device)  # mean already subtracted
        self.opt = torch.optim.SGD(self.net.parameters(), lr=0.01, momentum=0.9)
        self.counter = StepCounter(self.opt)
        self._batches = iter(())

    def _next(self):
        try:
            return next(self._batches)
        except StopIteration:  # a new epoch of both loaders
            self._batches = zip(self.loader_s, self.loader_t)
            return next(self._batches)

    def step(self, xs, ys, xt, p: float) -> torch.Tensor:
        """One DANN step on ``xs (B, 3, 28, 28)``, ``ys (B,)``, ``xt (B, 3, 28, 28)``."""
        n = len(xs)
        for group in self.opt.param_groups:
            group["lr"] = annealed_lr(p)
        f = self.net.features(torch.cat([xs, xt]))
        class_logits = self.net.label_predictor(f[:n])
        domain_logits = self.net.domain_classifier(grad_reverse(f, grl_lambda(p))).squeeze(-1)
        d = torch.cat([torch.zeros(n, device=xs.device), torch.ones(len(xt), device=xs.device)])
        loss = F.cross_entropy(class_logits, ys) + F.binary_cross_entropy_with_logits(domain_logits, d)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return loss.detach()

    def run(self, steps: int) -> None:
        for step in range(steps):
            (xs, ys), xt = self._next()
            self.step(xs.to(self.device), ys.to(self.device), xt.to(self.device), step / steps)
        _sync(self.device)


# -- (b), (c) and the other methods: dannlib's loop -----------------------------------------
class _AutocastFeatures(nn.Module):
    """A network's feature extractor (the convolutions) run under bfloat16 autocast, its
    output returned in float32, so that the fc layers and losses stay in float32: the
    ``bf16_conv`` experiment."""

    def __init__(self, inner: nn.Module, device_type: str):
        super().__init__()
        self.inner, self.device_type = inner, device_type

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device_type, dtype=torch.bfloat16):
            return self.inner(x).float()


def build_method(method: str, source: Domain, target: Domain, seeds: list[int], precision: str = "fp32",
                 channels_last: bool = False, **overrides):
    """A registered method's object, as ``methods.train`` builds it for one group of seeds,
    in a precision of :data:`BENCH_PRECISIONS` (``bf16_conv``: DANN-family networks only).
    ADDA (stage 2) starts from an untrained :class:`SourcePretrain`; its config has no
    ``precision``, so it is returned as is and the caller applies autocast.
    ``channels_last`` (IIMT, an experiment): its networks' convolution weights in
    channels_last memory format, as DANN does by default on the CPU."""
    check_choice("precision", precision, BENCH_PRECISIONS)
    cls, _ = methods.METHODS[method]
    if cls is methods.ADDA:
        if precision == "bf16_conv":
            raise ValueError("bf16_conv applies to the digits network (DANN, IIMT), not to ADDA")
        cfg = methods.make_config(method, **overrides)
        return methods.ADDA(cfg, SourcePretrain(cfg, source, None, seeds), seeds)
    cfg = methods.make_config(method, precision="fp32" if precision == "bf16_conv" else precision, **overrides)
    m = cls(cfg, source, target.unlabelled(), seeds)
    if channels_last:
        if not isinstance(m, methods.IIMT):
            raise ValueError("the channels_last experiment is for IIMT (DANN has its own channels_last setting)")
        for net in m.nets:
            net.to(memory_format=torch.channels_last)  # 4-D (conv) weights only
    if precision == "bf16_conv":
        for net in m.nets:
            net.feature_extractor = _AutocastFeatures(net.feature_extractor, source.x.device.type)
    return m


class _FitVariant:
    """``fit`` on a registered method built once (construction and warm-up are not timed).

    ``precision="bf16"`` sets the config's ``precision`` field; ADDA's config has none, so
    its whole ``fit`` runs under bfloat16 autocast instead (its step alone is timed here)."""

    def __init__(self, method: str, source: Domain, target: Domain, seeds: list[int], precision: str = "fp32",
                 batch_size: int = BATCH, **overrides):
        self.source, self.target, self.batch_size, self.seeds = source, target.unlabelled(), batch_size, len(seeds)
        self.method = build_method(method, source, target, seeds, precision, batch_size=batch_size, **overrides)
        self.autocast = isinstance(self.method, methods.ADDA) and precision == "bf16"
        m = self.method
        optimizer = m.opt_t[0] if isinstance(m, methods.ADDA) else getattr(m, "optimizer", None) or m.optimizers[0]
        self.counter = StepCounter(optimizer)

    def run(self, steps: int) -> None:
        device = self.source.x.device
        cast = torch.autocast(device.type, dtype=torch.bfloat16) if self.autocast else contextlib.nullcontext()
        with cast:
            fit(self.method, self.source, self.target, steps=steps, batch_size=self.batch_size, progress=False)
        _sync(device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _synthetic(device, channels: int = 3, seed: int = 0):
    """uint8 HWC arrays for the baseline and the same images as float tensors on the device."""
    rng = np.random.default_rng(seed)
    h, w = IMAGE_SHAPE[1], IMAGE_SHAPE[2]
    img_s = rng.integers(0, 256, (N_IMAGES, h, w, channels), dtype=np.uint8)
    img_t = rng.integers(0, 256, (N_IMAGES, h, w, channels), dtype=np.uint8)
    lab_s = rng.integers(0, 10, N_IMAGES)
    to_t = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2).float().div(255).contiguous().to(device)
    source = Domain("synthetic_source", to_t(img_s), torch.from_numpy(lab_s).long().to(device))
    target = Domain("synthetic_target", to_t(img_t))
    return img_s, lab_s, img_t, source, target


# -- settings --------------------------------------------------------------------------------
@dataclass
class Settings:
    device: torch.device
    steps: int
    k: int
    repeats: int
    warmup: int
    threads: list[int]
    num_workers: int
    precisions: list[str]
    methods: list[str]
    out: Path
    progress: bool


def _int(text: str) -> int:
    return int(text)


def _parse_list(option: str, text: str, allowed=None, convert=str) -> list:
    try:
        out = [convert(t.strip()) for t in text.split(",") if t.strip()]
    except ValueError:
        raise ValueError(f"{option} must be a comma-separated list, got {text!r}") from None
    if not out:
        raise ValueError(f"{option} is empty")
    for v in out:
        if allowed is not None:
            check_choice(option, v, allowed)
        elif convert is int:
            check_positive_int(option, v)  # thread counts
    return list(dict.fromkeys(out))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m dannlib bench", description=__doc__.splitlines()[0],
                                epilog="python -m dannlib bench accuracy --help: the bf16 accuracy check")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: dannlib.utils.default_device())")
    p.add_argument("--steps", type=int, default=30, help="timed steps per variant per repeat (default 30)")
    p.add_argument("--seeds", type=int, default=5, help="K, the seeds of the multi-seed variant (default 5)")
    p.add_argument("--repeats", type=int, default=3, help="interleaved rounds; medians are reported (default 3)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per variant before the rounds (default 3)")
    p.add_argument("--threads", default=None,
                   help="torch intra-op thread counts to compare, e.g. 1,2 (default: dannlib.utils.configure_threads's)")
    p.add_argument("--num-workers", type=int, default=2, help="DataLoader workers of the baseline (default 2)")
    p.add_argument("--precision", default="fp32,bf16",
                   help="precisions each timed method runs in (default fp32,bf16: bf16 = bfloat16 autocast; "
                        "also bf16_conv: the convolutions only)")
    p.add_argument("--methods", default="dann",
                   help=f"methods timed in each precision, of {', '.join(TIMED_METHODS)} (default dann)")
    p.add_argument("--out", default=None, help="JSON record (default results/bench/bench-<device>.json)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def parse_settings(argv: list[str] | None) -> Settings:
    """The checked settings (ValueError on a bad value)."""
    args = build_parser().parse_args(argv)
    device = resolve_device(args.device)
    if args.num_workers < 0:
        raise ValueError(f"--num-workers must be >= 0, got {args.num_workers}")
    return Settings(
        device=device,
        steps=check_positive_int("--steps", args.steps),
        k=check_positive_int("--seeds", args.seeds),
        repeats=check_positive_int("--repeats", args.repeats),
        warmup=max(1, args.warmup),
        threads=_parse_list("--threads", args.threads, convert=int) if args.threads else [],
        num_workers=args.num_workers,
        precisions=_parse_list("--precision", args.precision, BENCH_PRECISIONS),
        methods=_parse_list("--methods", args.methods, TIMED_METHODS),
        out=Path(args.out) if args.out else BENCH_DIR / f"bench-{device.type}.json",
        progress=not args.no_progress,
    )


@contextlib.contextmanager
def bench_environment(device: torch.device):
    """Restores the caller's torch settings the benchmark changes: the intra-op thread count
    (set per round through :func:`configure_threads`) and, on CUDA, TF32 matmuls (turned on
    inside: unmeasured on GPU; cuDNN convolutions use TF32 by default). Yields the TF32
    setting used (None off CUDA)."""
    threads_before = torch.get_num_threads()
    tf32_before = torch.backends.cuda.matmul.allow_tf32
    try:
        if device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
        yield True if device.type == "cuda" else None
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32_before
        configure_threads(threads_before)


# -- the variants ----------------------------------------------------------------------------
def variant_name(method: str, precision: str) -> str:
    base = "fit" if method == "dann" else method
    return base if precision == "fp32" else f"{base}_{precision}"


def variant_factories(s: Settings) -> dict[str, object]:
    """name -> zero-argument builder of each variant to time."""
    img_s, lab_s, img_t, source, target = _synthetic(s.device)
    out = {"dataloader": lambda: _DataLoaderBaseline(img_s, lab_s, img_t, s.device, 0, s.num_workers)}
    for method in s.methods:
        batch, channels = TIMED_METHODS[method]
        src, tgt = (source, target) if channels == 3 else _synthetic(s.device, channels)[3:]
        for precision in s.precisions:
            if method == "adda_gan" and precision == "bf16_conv":
                continue
            out[variant_name(method, precision)] = (
                lambda m=method, pr=precision, a=src, b=tgt, n=batch: _FitVariant(m, a, b, [0], pr, batch_size=n))
            if method == "iimt":  # the experiment: IIMT's networks in channels_last, as DANN's on the CPU
                out[variant_name(method, precision) + "_channels_last"] = (
                    lambda pr=precision: _FitVariant("iimt", source, target, [0], pr, channels_last=True))
    # (b) without the channels_last convolution weights that DANN uses on the CPU (the change's gain)
    out["fit_contiguous"] = lambda: _FitVariant("dann", source, target, [0], channels_last=False)
    if s.k > 1:
        out["fit_together"] = lambda: _FitVariant("dann", source, target, list(range(s.k)))
    return out


def build_variants(s: Settings) -> tuple[dict, dict[str, float]]:
    """Builds and warms up every variant (``s.warmup`` steps, untimed): ``(variants,
    setup seconds)``."""
    variants, setup = {}, {}
    for name, make in variant_factories(s).items():
        t0 = time.perf_counter()
        v = make()
        v.run(s.warmup)
        setup[name] = time.perf_counter() - t0
        variants[name] = v
    return variants, setup


def time_rounds(variants: dict, s: Settings) -> tuple[dict, list[float]]:
    """``--repeats`` rounds of ``--steps`` steps of every variant in turn, at each thread count:
    ``({(name, threads): [(wall seconds, CPU seconds) of each round]}, 1-min load averages)``.
    Raises RuntimeError when a variant's optimiser did not step exactly ``--steps`` times."""
    seconds = {(n, t): [] for n in variants for t in s.threads}
    loads = [os.getloadavg()[0]] if hasattr(os, "getloadavg") else []
    for r, t in itertools.product(range(s.repeats), s.threads):
        configure_threads(t)
        for name, v in variants.items():
            bar = _bar(f"round {r + 1}/{s.repeats} threads={t} {name}", s.progress)
            before = v.counter.count
            t0, c0 = time.perf_counter(), time.process_time()
            v.run(s.steps)
            seconds[(name, t)].append((time.perf_counter() - t0, time.process_time() - c0))
            done = v.counter.count - before
            if bar is not None:
                bar.update(1)
                bar.close()
            if done != s.steps:
                raise RuntimeError(f"variant {name!r} made {done} optimiser steps in a round of {s.steps}")
        if loads:
            loads.append(os.getloadavg()[0])
    return seconds, loads


# -- the record ------------------------------------------------------------------------------
def measurement_rows(seconds: dict, variants: dict, s: Settings) -> list[dict]:
    """One row per (variant, threads): median steps/s over the rounds, and the derived units."""
    rows = []
    for (name, t), times in seconds.items():
        secs, cpu = [w for w, _ in times], [c for _, c in times]
        per_round = [s.steps / x for x in secs]
        sps = statistics.median(per_round)
        k, batch = variants[name].seeds, _batch_of(name)
        rows.append({"variant": name, "threads": t, "seeds": k, "batch_per_domain": batch, "steps_per_s": sps,
                     "seed_steps_per_s": sps * k, "images_per_s": sps * k * 2 * batch,
                     "optimizer_steps_each_round": s.steps,
                     "steps_per_s_each_round": per_round, "seconds_each_round": secs,
                     "cpu_steps_per_s": statistics.median(s.steps / max(c, 1e-9) for c in cpu),
                     "cpu_seconds_each_round": cpu})
    if s.k > 1:  # (c) separate: K single-seed fits in a row run the code of (b): same seed-steps/s
        for t in s.threads:
            b = _row(rows, "fit", t)
            if b is not None:
                rows.append({**b, "variant": "fit_separate", "seeds": s.k, "steps_per_s": b["steps_per_s"] / s.k,
                             "note": "K single-seed fits one after another: (b)'s measurement, not timed again"})
    if len(s.threads) > 1:
        for r in rows:
            base = _row(rows, r["variant"], s.threads[0])
            r[f"over_threads_{s.threads[0]}"] = r["seed_steps_per_s"] / base["seed_steps_per_s"]
    return rows


def _batch_of(name: str) -> int:
    for method, (batch, _) in TIMED_METHODS.items():
        if name.startswith(variant_name(method, "fp32")):
            return batch
    return BATCH


def _row(rows: list[dict], name: str, threads: int) -> dict | None:
    return next((r for r in rows if r["variant"] == name and r["threads"] == threads), None)


def ratios(rows: list[dict], s: Settings) -> dict[str, dict]:
    """Per thread count, ratios of seed-steps/s: (b)/(a), (c)/(a), (c)/(b), together/(b),
    channels_last's gain, and ``<method>_<precision>_over_fp32`` for each timed method (in
    steps/s; ``..._cpu_time``: in steps per CPU second)."""
    out = {}
    for t in s.threads:
        get = lambda n: _row(rows, n, t)
        q = {}
        a, b = get("dataloader"), get("fit")
        if b is not None:
            multi = [get(n) for n in ("fit_together", "fit_separate") if get(n) is not None]
            c = max(multi, key=lambda r: r["seed_steps_per_s"]) if multi else b
            q.update(c_is=c["variant"], b_over_a=b["seed_steps_per_s"] / a["seed_steps_per_s"],
                     c_over_a=c["seed_steps_per_s"] / a["seed_steps_per_s"],
                     c_over_b=c["seed_steps_per_s"] / b["seed_steps_per_s"],
                     b_over_fit_contiguous=b["seed_steps_per_s"] / get("fit_contiguous")["seed_steps_per_s"])
            if get("fit_together") is not None:
                q["together_over_b"] = get("fit_together")["seed_steps_per_s"] / b["seed_steps_per_s"]
        pairs = [(method, variant_name(method, "fp32"), variant_name(method, p), p) for method in s.methods
                 for p in s.precisions if p != "fp32"]
        if "iimt" in s.methods:  # channels_last IIMT against its own fp32, and fp32 channels_last against fp32
            pairs += [("iimt_channels_last", "iimt_channels_last", f"iimt_{p}_channels_last", p)
                      for p in s.precisions if p != "fp32"]
            pairs.append(("iimt", "iimt", "iimt_channels_last", "channels_last"))
        for method, base_name, other_name, label in pairs:
            base, other = get(base_name), get(other_name)
            if base is not None and other is not None:
                q[f"{method}_{label}_over_fp32"] = other["steps_per_s"] / base["steps_per_s"]
                q[f"{method}_{label}_over_fp32_cpu_time"] = other["cpu_steps_per_s"] / base["cpu_steps_per_s"]
        out[str(t)] = q
    return out


def make_record(s: Settings, rows, setup, loads, tf32, threads_default) -> dict:
    return {
        "benchmark": "dannlib bench: digits training throughput",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(s.device),
        "device": str(s.device),
        "torch": torch.__version__,
        "torchvision": _torchvision_version(),
        "threads": {"intra_op_compared": s.threads, "intra_op_default": threads_default,
                    "interop": torch.get_num_interop_threads(), "cpu_count": os.cpu_count()},
        "tf32_matmul": tf32,
        "load_average_1min": loads,
        "settings": {"steps": s.steps, "repeats": s.repeats, "warmup": s.warmup, "seeds_K": s.k,
                     "batch_per_domain": BATCH, "images_per_domain": N_IMAGES, "image_shape": list(IMAGE_SHAPE),
                     "precisions": s.precisions, "methods": s.methods,
                     "data": "synthetic random images and labels (throughput does not depend on the pixels)",
                     "num_workers": s.num_workers, "network": "digits_net (adda_gan: LeNet, 1 channel, batch 128)",
                     "optimizer": "SGD momentum 0.9, eq. 7 lr, eq. 6 lambda (adda_gan: Adam)",
                     "bf16": "torch.autocast(bfloat16) around the step (weights and optimiser in float32)"},
        "setup_seconds": setup,
        "measurements": rows,
        "ratios_seed_steps": ratios(rows, s),
    }


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["accuracy"]:
        return accuracy_main(argv[1:])
    if argv[:1] == ["sweep"]:
        return sweep_main(argv[1:])
    try:
        s = parse_settings(argv)
    except ValueError as exc:
        print(f"dannlib bench: {exc}", file=sys.stderr)
        return 2
    threads_default = torch.get_num_threads()
    with bench_environment(s.device) as tf32:
        s.threads = s.threads or [configure_threads()]
        configure_threads(s.threads[0])
        variants, setup = build_variants(s)
        seconds, loads = time_rounds(variants, s)
    record = make_record(s, measurement_rows(seconds, variants, s), setup, loads, tf32, threads_default)
    with atomic_write(s.out) as fh:
        json.dump(record, fh, indent=1)
    print_table(record)
    print(f"wrote {s.out}")
    return 0


# -- bf16 accuracy: DANN on MNIST -> MNIST-M --------------------------------------------------
def build_accuracy_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m dannlib bench accuracy",
                                description="DANN on MNIST -> MNIST-M in each precision, same steps and seeds: "
                                            "target test accuracy per run (does bf16 hold accuracy?)")
    p.add_argument("--steps", type=int, default=3000, help="training steps per run (default 3000)")
    p.add_argument("--seeds", default="0,1,2", help="seeds (default 0,1,2)")
    p.add_argument("--precision", default="fp32,bf16", help="precisions compared (default fp32,bf16)")
    p.add_argument("--n-train", type=int, default=20000,
                   help="training images per domain (random subset, seed 0; default 20000)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: configure_threads's policy)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=None, help="JSON record (default results/bench/precision-accuracy.json)")
    p.add_argument("--no-progress", action="store_true")
    return p


def accuracy_main(argv: list[str]) -> int:
    args = build_accuracy_parser().parse_args(argv)
    try:
        steps = check_positive_int("--steps", args.steps)
        seeds = check_seeds(_parse_list("--seeds", args.seeds, convert=_int))
        precisions = _parse_list("--precision", args.precision, BENCH_PRECISIONS)
        n_train = check_positive_int("--n-train", args.n_train)
        device = resolve_device(args.device)
    except ValueError as exc:
        print(f"dannlib bench accuracy: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else BENCH_DIR / "precision-accuracy.json"
    from .data import load_domain

    source = Domain("mnist", *load_domain("mnist", "train", None, n=n_train, seed=0, device=device))
    target = Domain("mnist_m", *load_domain("mnist_m", "train", None, n=n_train, seed=0, device=device))
    eval_sets = {"target_test": Domain("mnist_m_test", *load_domain("mnist_m", "test", None, device=device)),
                 "source_test": Domain("mnist_test", *load_domain("mnist", "test", None, device=device))}
    with bench_environment(device):
        threads = configure_threads(args.threads)
        record = {"benchmark": "dannlib bench accuracy: DANN MNIST -> MNIST-M, fp32 vs bf16 autocast",
                  "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  "machine": machine_info(device), "command": "python -m dannlib bench accuracy " + " ".join(argv),
                  "settings": {"method": "dann", "steps": steps, "seeds": seeds, "precisions": precisions,
                               "threads": threads, "n_train_per_domain": n_train,
                               "eval": "full MNIST-M and MNIST test sets", "batch_per_domain": BATCH},
                  "runs": [], "summary": {}}
        for seed, precision in itertools.product(seeds, precisions):  # interleaved: fp32, bf16, fp32, ...
            r = _train_dann(source, target, seed, precision, steps, eval_sets, progress=not args.no_progress)
            record["runs"].append({"seed": seed, "precision": precision, "status": r.status,
                                   "target_test_acc": r.final["target_test_acc"],
                                   "source_test_acc": r.final["source_test_acc"], "seconds": r.seconds,
                                   "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None})
            record["summary"] = accuracy_summary(record["runs"])
            with atomic_write(out) as fh:  # after every run: a partial record survives an interruption
                json.dump(record, fh, indent=1)
            print(f"seed {seed} {precision}: target test {r.final['target_test_acc']:.4f}, "
                  f"source test {r.final['source_test_acc']:.4f}, {r.seconds:.0f} s", flush=True)
    for precision, q in record["summary"].items():
        std = q["target_test_acc_std"]
        print(f"{precision}: target test accuracy {q['target_test_acc_mean']:.4f}"
              + (f" ± {std:.4f}" if std is not None else "")
              + f" (n={q['n']}), source {q['source_test_acc_mean']:.4f}, {q['seconds_mean']:.0f} s per run")
    print(f"wrote {out}")
    return 0


def _train_dann(source, target, seed, precision, steps, eval_sets, progress) -> "methods.RunResult":
    """One DANN run: ``methods.train`` for dannlib's precisions; the same construction and
    ``fit`` call as ``Method.run`` for this benchmark's ``bf16_conv``."""
    if precision in PRECISIONS:
        (r,) = methods.train("dann", source, target, seeds=[seed], eval_sets=eval_sets, steps=steps,
                             precision=precision, progress=progress)
        return r
    m = build_method("dann", source, target, [seed], precision, steps=steps)
    (r,) = fit(m, source, target.unlabelled(), steps=steps, batch_size=m.config.batch_size, eval_sets=eval_sets,
               eval_every=m.config.eval_every, progress=progress)
    return r


def accuracy_summary(runs: list[dict]) -> dict:
    """Per precision: mean and sample std (n - 1) over the seeds of the ok runs."""
    out = {}
    for precision in dict.fromkeys(r["precision"] for r in runs):
        ok = [r for r in runs if r["precision"] == precision and r["status"] == "ok"]
        q = {"n": len(ok), "seeds": [r["seed"] for r in ok]}
        for key in ("target_test_acc", "source_test_acc", "seconds"):
            vals = [r[key] for r in ok]
            q[f"{key}_mean"] = statistics.fmean(vals) if vals else None
            q[f"{key}_std"] = statistics.stdev(vals) if len(vals) > 1 else None
        out[precision] = q
    return out


# -- processes against threads for a sweep ---------------------------------------------------
#: the three ways of training a sweep's runs on ``--cores`` cores: name -> (ensure's workers,
#: torch threads of the process that trains), with ``c`` = ``--cores``
SWEEP_VARIANTS = {"processes": lambda c: (c, 1), "threads": lambda c: (1, c), "serial": lambda c: (1, 1)}
SWEEP_RATIOS = (("processes", "threads"), ("processes", "serial"), ("threads", "serial"))


def build_sweep_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m dannlib bench sweep",
        description="The same K short runs trained by dannlib.sweep.ensure three ways, interleaved round by "
                    "round, each into a fresh temporary store: (a) processes: workers=CORES, one torch thread "
                    "each; (b) threads: workers=1 with CORES torch threads; (c) serial: workers=1, one thread. "
                    "Reports runs/minute and the ratios a/b, a/c, b/c.")
    p.add_argument("--runs", type=int, default=4, help="K, the runs of each sweep (seeds 0..K-1; default 4)")
    p.add_argument("--steps", type=int, default=400, help="training steps per run (default 400)")
    p.add_argument("--repeats", type=int, default=3, help="interleaved rounds; medians are reported (default 3)")
    p.add_argument("--cores", type=int, default=2, help="processes of (a), threads of (b) (default 2)")
    p.add_argument("--data", choices=("digits", "toy"), default="digits",
                   help="digits: DANN MNIST -> MNIST-M on --n-train images per domain (default); toy: DANN on "
                        "the 2-D blobs of notebook 01 (seconds; for tests)")
    p.add_argument("--n-train", type=int, default=2000, help="training images per domain (default 2000)")
    p.add_argument("--n-test", type=int, default=500, help="test images per domain (default 500)")
    p.add_argument("--data-root", default=None, help="the data root (default: $DANNLIB_DATA, else data/)")
    p.add_argument("--tmp-dir", default=None, help="where the temporary stores go (default: the system's)")
    p.add_argument("--out", default=None, help="JSON record (default results/bench/bench-sweep-<data>.json)")
    p.add_argument("--no-progress", action="store_true")
    return p


def sweep_specs(data: str, runs: int, steps: int, n_train: int = 2000, n_test: int = 500) -> list:
    """The K run specs every variant trains: DANN, batch 32, seeds 0..K-1."""
    from .plan import TOYS
    from .store import RunSpec, digits_data, toy_data

    if data == "toy":
        t = TOYS["blobs"]
        spec = toy_data("blobs", **t["data"])
        return [RunSpec.make("dann", spec, seed, network=t["network"], lr=t["lr"], steps=steps, batch_size=32)
                for seed in range(runs)]
    spec = digits_data("mnist", "mnist_m", n_source=n_train, n_target=n_train, n_test=n_test)
    return [RunSpec.make("dann", spec, seed, steps=steps, batch_size=32) for seed in range(runs)]


def _clear_data_caches() -> None:
    """Forget the data this process has loaded (the store's and the loaders' lru caches), so
    that an in-process sweep pays for loading its data once, as a fresh ``sweep`` command (or
    each worker process) does, not only in the benchmark's first round."""
    import functools as ft

    from . import store

    for mod in [store] + [m for n, m in list(sys.modules.items()) if n.startswith("dannlib.data")]:
        for obj in vars(mod).values():
            if isinstance(obj, ft._lru_cache_wrapper) and obj is not store.code_version:
                obj.cache_clear()


def _cpu_seconds() -> float:
    """CPU seconds of this process and of its waited-for children (the worker processes)."""
    import resource

    return sum(u.ru_utime + u.ru_stime for u in (resource.getrusage(resource.RUSAGE_SELF),
                                                  resource.getrusage(resource.RUSAGE_CHILDREN)))


def _loadavg() -> list[float] | None:
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def _other_sweeps() -> list[str]:
    """The command lines of other processes running ``dannlib sweep`` (background sweeps that
    share the CPU; their worker processes are not named so), as ``pgrep -f`` would find them."""
    found = []
    for d in Path("/proc").glob("[0-9]*"):
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        if int(d.name) != os.getpid() and "dannlib sweep" in cmd and "grep" not in cmd:
            found.append(f"{d.name}: {cmd[:160]}")
    return found


def time_sweep(name: str, specs: list, cores: int, tmp_root: str, data_root) -> dict:
    """One sweep of ``specs`` the ``name`` way into a fresh store: wall and CPU seconds, and
    what the store holds afterwards (RuntimeError unless exactly the K runs asked for)."""
    import shutil
    import tempfile

    from . import sweep  # here, not at the top: only the CLI imports dannlib.sweep at module level
    from .store import Store

    workers, threads = SWEEP_VARIANTS[name](cores)
    root = tempfile.mkdtemp(prefix=f"bench-sweep-{name}-", dir=tmp_root)
    try:
        store = Store(root)
        _clear_data_caches()
        configure_threads(threads)
        c0, t0 = _cpu_seconds(), time.perf_counter()
        run = sweep.ensure
        run(specs, store=store, workers=workers, data_root=data_root, progress=False)
        wall, cpu = time.perf_counter() - t0, _cpu_seconds() - c0
        summary = run.last_summary
        keys = sorted(p.stem for p in Path(root).glob("*/*.json"))
        if keys != sorted(s.key for s in specs) or summary.trained != len(specs) or summary.failed:
            raise RuntimeError(f"sweep variant {name!r}: the store holds {len(keys)} finished runs "
                               f"({summary.line()}; failed: {summary.failed}), not the {len(specs)} asked for")
        runs = [store.get(s) for s in specs]
        return {"wall_seconds": wall, "cpu_seconds": cpu, "workers": workers, "torch_threads": threads,
                "keys": keys, "run_seconds": [r.seconds for r in runs],
                "run_torch_threads": [r.machine.get("torch_threads") for r in runs],
                "final_acc": [{k: v for k, v in r.final.items() if k.endswith("_acc")} for r in runs]}
    finally:
        shutil.rmtree(root, ignore_errors=True)


def sweep_summary(rounds: list[dict], k: int) -> tuple[dict, dict]:
    """Per variant: median runs/minute over the rounds (and each round's); the ratios of the
    medians (``a_over_b`` ...) and, per round, of the paired rounds.

    Beside the wall clock (``runs_per_minute``: what this sweep took), ``in_run_runs_per_minute``
    leaves out what a longer sweep pays once per worker, not per run (process start-up, imports,
    data loading) and the final evaluation and store writes: ``concurrency x 60 / mean seconds
    inside a run`` (``fit``'s own timer: the steps and the periodic evaluations), ``concurrency``
    = the runs trained at once (``min(workers, K)``). ``overhead_seconds``: wall seconds beyond
    the in-run seconds (``wall - sum(run seconds) / concurrency``)."""
    per = {}
    for name in SWEEP_VARIANTS:
        vs = [r["variants"][name] for r in rounds]
        rpm = [k * 60 / v["wall_seconds"] for v in vs]
        inner = [min(v["workers"], k) * 60 / statistics.fmean(v["run_seconds"]) for v in vs]
        per[name] = {"runs_per_minute": statistics.median(rpm), "runs_per_minute_each_round": rpm,
                     "in_run_runs_per_minute": statistics.median(inner), "in_run_runs_per_minute_each_round": inner,
                     "overhead_seconds": statistics.median(
                         v["wall_seconds"] - sum(v["run_seconds"]) / min(v["workers"], k) for v in vs),
                     "cpu_seconds_per_run": statistics.median(v["cpu_seconds"] for v in vs) / k}
    ratios = {}
    for a, b in SWEEP_RATIOS:
        for unit, suffix in (("runs_per_minute", ""), ("in_run_runs_per_minute", "_in_run")):
            ratios[f"{a}_over_{b}{suffix}"] = per[a][unit] / per[b][unit]
            ratios[f"{a}_over_{b}{suffix}_each_round"] = [
                x / y for x, y in zip(per[a][f"{unit}_each_round"], per[b][f"{unit}_each_round"])]
    return per, ratios


def sweep_main(argv: list[str]) -> int:
    import tempfile

    args = build_sweep_parser().parse_args(argv)
    try:
        k = check_positive_int("--runs", args.runs)
        steps = check_positive_int("--steps", args.steps)
        repeats = check_positive_int("--repeats", args.repeats)
        cores = check_positive_int("--cores", args.cores)
        if cores < 2:
            raise ValueError(f"--cores must be >= 2 (processes against threads), got {cores}")
        specs = sweep_specs(args.data, k, steps, check_positive_int("--n-train", args.n_train),
                            check_positive_int("--n-test", args.n_test))
    except ValueError as exc:
        print(f"dannlib bench sweep: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else BENCH_DIR / f"bench-sweep-{args.data}.json"
    device = resolve_device(None)
    names = list(SWEEP_VARIANTS)
    record = {"benchmark": "dannlib bench sweep: a sweep's runs in worker processes vs torch threads",
              "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "command": "python -m dannlib bench sweep " + " ".join(argv),
              "machine": machine_info(device), "cpu_affinity": len(os.sched_getaffinity(0))
              if hasattr(os, "sched_getaffinity") else None,
              "settings": {"runs_K": k, "steps": steps, "repeats": repeats, "cores": cores, "data": args.data,
                           "n_train": args.n_train if args.data == "digits" else None,
                           "n_test": args.n_test if args.data == "digits" else None, "method": "dann",
                           "batch_size": 32, "seeds": list(range(k)), "keys": [s.key for s in specs],
                           "variants": {n: dict(zip(("workers", "torch_threads"), f(cores)))
                                        for n, f in SWEEP_VARIANTS.items()},
                           "timed": "wall seconds of one ensure() call into a fresh temporary store, data "
                                    "caches cleared (worker start-up and data loading included)"},
              "load_average": {"start": _loadavg(), "end": None, "after_each_round_1min": []},
              "other_dannlib_sweeps": {"start": _other_sweeps(), "end": None},
              "rounds": [], "complete": False}
    with bench_environment(device), tempfile.TemporaryDirectory(prefix="bench-sweep-", dir=args.tmp_dir) as tmp:
        for r in range(repeats):
            order = names[r % len(names):] + names[:r % len(names)]  # rotated: no variant always first
            rnd = {"order": order, "variants": {}}
            for name in order:
                rnd["variants"][name] = v = time_sweep(name, specs, cores, tmp, args.data_root)
                if not args.no_progress:
                    print(f"round {r + 1}/{repeats} {name}: {k} runs in {v['wall_seconds']:.1f} s "
                          f"({k * 60 / v['wall_seconds']:.2f} runs/min), load {os.getloadavg()[0]:.1f}", flush=True)
            record["rounds"].append(rnd)
            record["load_average"]["after_each_round_1min"].append(os.getloadavg()[0])
            record["variants"], record["ratios"] = sweep_summary(record["rounds"], k)
            with atomic_write(out) as fh:  # after every round: a partial record survives an interruption
                json.dump(record, fh, indent=1)
    record["load_average"]["end"] = _loadavg()
    record["other_dannlib_sweeps"]["end"] = _other_sweeps()
    record["complete"] = True
    with atomic_write(out) as fh:
        json.dump(record, fh, indent=1)
    for name, q in record["variants"].items():
        w, t = SWEEP_VARIANTS[name](cores)
        print(f"{name:<10} {w} process(es) x {t} thread(s): {q['runs_per_minute']:.2f} runs/min "
              f"(in-run {q['in_run_runs_per_minute']:.2f}; overhead {q['overhead_seconds']:.1f} s; "
              f"{q['cpu_seconds_per_run']:.1f} CPU s per run)")
    q = record["ratios"]
    print(f"{k} runs x {steps} steps, {repeats} rounds, load {record['load_average']['start'][0]:.1f} -> "
          f"{record['load_average']['end'][0]:.1f}: "
          + ", ".join(f"{a}/{b} {q[f'{a}_over_{b}']:.2f} (in-run {q[f'{a}_over_{b}_in_run']:.2f})"
                      for a, b in SWEEP_RATIOS))
    print(f"wrote {out}")
    return 0


# -- output ----------------------------------------------------------------------------------
def _torchvision_version():
    try:
        import torchvision

        return torchvision.__version__
    except Exception:  # pragma: no cover
        return None


def _bar(desc: str, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=1, desc=desc, mininterval=0.5, leave=False, file=sys.stderr)


def print_table(record: dict) -> None:
    s = record["settings"]
    print(f"digits training throughput on {record['device']} ({record['machine'].get('device_name')}), "
          f"torch {record['torch']}, {s['steps']} steps x {s['repeats']} rounds, K={s['seeds_K']}, "
          f"precisions {', '.join(s['precisions'])}, {s['data']}; "
          f"1-min load average {', '.join(f'{x:.1f}' for x in record['load_average_1min'])}")
    print(f"{'variant':<24}{'threads':>8}{'seeds':>6}{'batch':>6}{'steps/s':>10}{'seed-steps/s':>14}"
          f"{'images/s':>10}{'steps/CPU-s':>13}")
    for r in record["measurements"]:
        print(f"{r['variant']:<24}{r['threads']:>8}{r['seeds']:>6}{r['batch_per_domain']:>6}{r['steps_per_s']:>10.2f}"
              f"{r['seed_steps_per_s']:>14.2f}{r['images_per_s']:>10.0f}{r['cpu_steps_per_s']:>13.2f}")
    for t, q in record["ratios_seed_steps"].items():
        if "b_over_a" in q:
            print(f"threads={t}: (b)/(a) {q['b_over_a']:.2f}, (c)/(a) {q['c_over_a']:.2f}, "
                  f"(c)/(b) {q['c_over_b']:.2f} in seed-steps/s, (c) = {q['c_is']}, "
                  f"channels_last gain {q['b_over_fit_contiguous']:.2f}"
                  + (f", together/(b) {q['together_over_b']:.2f}" if "together_over_b" in q else ""))
        prec = [f"{k.removesuffix('_over_fp32')} {v:.2f} ({q[k + '_cpu_time']:.2f})"
                for k, v in q.items() if k.endswith("_over_fp32")]
        if prec:
            print(f"threads={t}: precision / fp32 in steps/s (in steps per CPU second): " + ", ".join(prec))


if __name__ == "__main__":
    sys.exit(main())
