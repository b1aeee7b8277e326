"""``python -m dannlib bench``: DANN training throughput on the digits network, three ways,
measured in ONE run so that they can be compared as ratios on a shared, noisy machine.

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
- ``fit_contiguous``: (b) with ``DANNConfig(channels_last=False)``, to show what the
  channels_last convolution weights (DANN's default on the CPU) gain; ``fit_compiled``
  (``--compile``): (b) with ``DANNConfig(compile=True)``, its compilation timed apart in
  ``setup_seconds``.

The data are synthetic random images (``(N, 3, 28, 28)`` in [0, 1], random labels): the
throughput of a step does not depend on the pixel values, and no data set is needed.

Each variant is built and warmed up once; then ``--repeats`` rounds each time ``--steps``
steps of every variant in turn (a b c a b c ...), and the medians are reported. Throughput:
steps/s (optimiser steps), seed-steps/s (steps x seeds trained by one step; the unit that
compares one seed with K seeds) and images/s (seed-steps x 2 x batch). With
``--threads 1,2`` every round also cycles through the thread counts, so the thread
setting is compared within the same run too.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import networks
from .grl import grad_reverse
from .methods import DANN, make_config
from .schedules import annealed_lr, grl_lambda
from .training import Domain, fit
from .utils import PROJECT_ROOT, atomic_write, check_positive_int, machine_info, resolve_device, seeded

BATCH = 32          # per domain, as in DANNConfig
N_IMAGES = 2048     # synthetic images per domain
IMAGE_SHAPE = (3, 28, 28)


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

    def run(self, steps: int, bar=None) -> None:
        for step in range(steps):
            (xs, ys), xt = self._next()
            self.step(xs.to(self.device), ys.to(self.device), xt.to(self.device), step / steps)
            if bar is not None:
                bar.update(1)
        _sync(self.device)


# -- (b), (c): dannlib's loop -------------------------------------------------------------
class _FitVariant:
    """``fit`` on a DANN method built once (construction and warm-up are not timed)."""

    def __init__(self, source: Domain, target: Domain, seeds: list[int], **overrides):
        cfg = make_config("dann", batch_size=BATCH, **overrides)
        self.method = DANN(cfg, source, target.unlabelled(), seeds)
        self.source, self.target = source, target.unlabelled()

    def run(self, steps: int, bar=None) -> None:
        fit(self.method, self.source, self.target, steps=steps, batch_size=BATCH, progress=False)
        if bar is not None:
            bar.update(steps)
        _sync(self.source.x.device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _synthetic(device, seed: int = 0):
    """uint8 HWC arrays for the baseline and the same images as float tensors on the device."""
    rng = np.random.default_rng(seed)
    h, w, c = IMAGE_SHAPE[1], IMAGE_SHAPE[2], IMAGE_SHAPE[0]
    img_s = rng.integers(0, 256, (N_IMAGES, h, w, c), dtype=np.uint8)
    img_t = rng.integers(0, 256, (N_IMAGES, h, w, c), dtype=np.uint8)
    lab_s = rng.integers(0, 10, N_IMAGES)
    to_t = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2).float().div(255).contiguous().to(device)
    source = Domain("synthetic_source", to_t(img_s), torch.from_numpy(lab_s).long().to(device))
    target = Domain("synthetic_target", to_t(img_t))
    return img_s, lab_s, img_t, source, target


def _parse_threads(text: str | None) -> list[int]:
    if text is None:
        return [torch.get_num_threads()]
    try:
        out = [int(t) for t in text.split(",")]
    except ValueError:
        raise ValueError(f"--threads must be a comma-separated list of positive integers, got {text!r}") from None
    return [check_positive_int("--threads", t) for t in out]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m dannlib bench", description=__doc__.splitlines()[0])
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: dannlib.utils.default_device())")
    p.add_argument("--steps", type=int, default=30, help="timed steps per variant per repeat (default 30)")
    p.add_argument("--seeds", type=int, default=5, help="K, the seeds of the multi-seed variant (default 5)")
    p.add_argument("--repeats", type=int, default=3, help="interleaved rounds; medians are reported (default 3)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per variant before the rounds (default 3)")
    p.add_argument("--threads", default=None,
                   help="torch intra-op thread counts to compare, e.g. 1,2 (default: the current setting)")
    p.add_argument("--num-workers", type=int, default=2, help="DataLoader workers of the baseline (default 2)")
    p.add_argument("--compile", action="store_true",
                   help="also time fit with DANNConfig(compile=True), single seed (compile time reported apart)")
    p.add_argument("--out", default=None, help="JSON record (default results/bench/bench-<device>.json)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        device = resolve_device(args.device)
        steps = check_positive_int("--steps", args.steps)
        k = check_positive_int("--seeds", args.seeds)
        repeats = check_positive_int("--repeats", args.repeats)
        threads = _parse_threads(args.threads)
        if args.num_workers < 0:
            raise ValueError(f"--num-workers must be >= 0, got {args.num_workers}")
    except ValueError as exc:
        print(f"dannlib bench: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else PROJECT_ROOT / "results" / "bench" / f"bench-{device.type}.json"
    threads_before = torch.get_num_threads()
    tf32 = None
    if device.type == "cuda":  # unmeasured on GPU: TF32 matmuls (cuDNN convolutions use TF32 by default)
        torch.backends.cuda.matmul.allow_tf32 = True
        tf32 = True

    img_s, lab_s, img_t, source, target = _synthetic(device)
    seeds = list(range(k))
    variants: dict[str, object] = {}
    seeds_per_step: dict[str, int] = {}
    setup_s: dict[str, float] = {}

    def add(name, make, n_seeds):
        t0 = time.perf_counter()
        v = make()
        v.run(max(1, args.warmup))
        setup_s[name] = time.perf_counter() - t0
        variants[name], seeds_per_step[name] = v, n_seeds

    torch.set_num_threads(threads[0])
    add("dataloader", lambda: _DataLoaderBaseline(img_s, lab_s, img_t, device, 0, args.num_workers), 1)
    add("fit", lambda: _FitVariant(source, target, [0]), 1)
    # (b) without the channels_last convolution weights that DANN uses on the CPU (the change's gain)
    add("fit_contiguous", lambda: _FitVariant(source, target, [0], channels_last=False), 1)
    if k > 1:
        add("fit_together", lambda: _FitVariant(source, target, seeds), k)
    if args.compile:
        add("fit_compiled", lambda: _FitVariant(source, target, [0], compile=True), 1)

    seconds: dict[tuple[str, int], list[float]] = {(n, t): [] for n in variants for t in threads}
    loads = [os.getloadavg()[0]] if hasattr(os, "getloadavg") else []
    show = not args.no_progress
    for r, t in itertools.product(range(repeats), threads):
        torch.set_num_threads(t)
        for name, v in variants.items():
            bar = _bar(steps, f"round {r + 1}/{repeats} threads={t} {name}", show)
            t0 = time.perf_counter()
            v.run(steps, bar)
            seconds[(name, t)].append(time.perf_counter() - t0)
            if bar is not None:
                bar.close()
        if loads:
            loads.append(os.getloadavg()[0])
    torch.set_num_threads(threads_before)

    rows = []
    for (name, t), secs in seconds.items():
        per_round = [steps / s for s in secs]
        sps = statistics.median(per_round)
        rows.append({"variant": name, "threads": t, "seeds": seeds_per_step[name], "steps_per_s": sps,
                     "seed_steps_per_s": sps * seeds_per_step[name],
                     "images_per_s": sps * seeds_per_step[name] * 2 * BATCH,
                     "steps_per_s_each_round": per_round, "seconds_each_round": secs})
    if k > 1:  # (c) separate: K single-seed fits in a row run the code of (b): same seed-steps/s
        for t in threads:
            b = next(r for r in rows if r["variant"] == "fit" and r["threads"] == t)
            rows.append({**b, "variant": "fit_separate", "seeds": k, "steps_per_s": b["steps_per_s"] / k,
                         "note": "K single-seed fits one after another: (b)'s measurement, not timed again"})
    ratios = {}
    for t in threads:
        get = lambda n: next((r for r in rows if r["variant"] == n and r["threads"] == t), None)
        a, b = get("dataloader"), get("fit")
        multi = [get(n) for n in ("fit_together", "fit_separate") if get(n) is not None]
        c = max(multi, key=lambda r: r["seed_steps_per_s"]) if multi else b
        ratios[str(t)] = {"c_is": c["variant"],
                          "b_over_a": b["seed_steps_per_s"] / a["seed_steps_per_s"],
                          "c_over_a": c["seed_steps_per_s"] / a["seed_steps_per_s"],
                          "c_over_b": c["seed_steps_per_s"] / b["seed_steps_per_s"]}
        if get("fit_together") is not None:
            ratios[str(t)]["together_over_b"] = get("fit_together")["seed_steps_per_s"] / b["seed_steps_per_s"]
        ratios[str(t)]["b_over_fit_contiguous"] = b["seed_steps_per_s"] / get("fit_contiguous")["seed_steps_per_s"]
        if get("fit_compiled") is not None:
            ratios[str(t)]["compiled_over_b"] = get("fit_compiled")["seed_steps_per_s"] / b["seed_steps_per_s"]
    if len(threads) > 1:
        for name in variants:
            base = next(r for r in rows if r["variant"] == name and r["threads"] == threads[0])
            for r in rows:
                if r["variant"] == name:
                    r[f"over_threads_{threads[0]}"] = r["seed_steps_per_s"] / base["seed_steps_per_s"]

    record = {
        "benchmark": "dannlib bench: DANN digits training throughput",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(device),
        "device": str(device),
        "torch": torch.__version__,
        "torchvision": _torchvision_version(),
        "threads": {"intra_op_compared": threads, "intra_op_default": threads_before,
                    "interop": torch.get_num_interop_threads(), "cpu_count": os.cpu_count()},
        "tf32_matmul": tf32,
        "load_average_1min": loads,
        "settings": {"steps": steps, "repeats": repeats, "warmup": args.warmup, "seeds_K": k,
                     "batch_per_domain": BATCH, "images_per_domain": N_IMAGES, "image_shape": list(IMAGE_SHAPE),
                     "data": "synthetic random images and labels (throughput does not depend on the pixels)",
                     "num_workers": args.num_workers, "network": "digits_net",
                     "optimizer": "SGD momentum 0.9, eq. 7 lr, eq. 6 lambda"},
        "setup_seconds": setup_s,
        "measurements": rows,
        "ratios_seed_steps": ratios,
    }
    with atomic_write(out) as fh:
        json.dump(record, fh, indent=1)
    _print_table(record)
    print(f"wrote {out}")
    return 0


def _torchvision_version():
    try:
        import torchvision

        return torchvision.__version__
    except Exception:  # pragma: no cover
        return None


def _bar(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, mininterval=0.5, leave=False, file=sys.stderr)


def _print_table(record: dict) -> None:
    s = record["settings"]
    print(f"DANN digits throughput on {record['device']} ({record['machine'].get('device_name')}), "
          f"torch {record['torch']}, {s['steps']} steps x {s['repeats']} rounds, K={s['seeds_K']}, "
          f"batch {s['batch_per_domain']}+{s['batch_per_domain']}, {s['data']}; "
          f"1-min load average {', '.join(f'{x:.1f}' for x in record['load_average_1min'])}")
    print(f"{'variant':<14}{'threads':>8}{'seeds':>6}{'steps/s':>10}{'seed-steps/s':>14}{'images/s':>10}")
    for r in record["measurements"]:
        print(f"{r['variant']:<14}{r['threads']:>8}{r['seeds']:>6}{r['steps_per_s']:>10.2f}"
              f"{r['seed_steps_per_s']:>14.2f}{r['images_per_s']:>10.0f}")
    for t, q in record["ratios_seed_steps"].items():
        extra = "".join(f", {k} {v:.2f}" for k, v in q.items() if k not in ("c_is", "b_over_a", "c_over_a", "c_over_b"))
        print(f"threads={t}: (b)/(a) {q['b_over_a']:.2f}, (c)/(a) {q['c_over_a']:.2f}, "
              f"(c)/(b) {q['c_over_b']:.2f} in seed-steps/s, (c) = {q['c_is']}{extra}")


if __name__ == "__main__":
    sys.exit(main())
