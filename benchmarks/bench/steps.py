"""The step benchmark (``python -m benchmarks.bench``): settings, interleaved timing rounds, the record, the table."""
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

import torch

from dannlib.utils import (atomic_write, check_choice, check_positive_int, configure_threads, machine_info,
                           resolve_device)

from .variants import (BATCH, BENCH_DIR, BENCH_PRECISIONS, IMAGE_SHAPE, N_IMAGES, TIMED_METHODS,  # noqa: F401
                       _DataLoaderBaseline, _FitVariant, _synthetic)


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
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench", description=__doc__.splitlines()[0],
                                epilog="python -m benchmarks.bench accuracy --help: the bf16 accuracy check")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: dannlib.utils.resolve_device())")
    p.add_argument("--steps", type=int, default=30, help="timed steps per variant per repeat (default 30)")
    p.add_argument("--seeds", type=int, default=5, help="K, the seeds of the fit_separate row (default 5)")
    p.add_argument("--repeats", type=int, default=3, help="interleaved rounds; medians are reported (default 3)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per variant before the rounds (default 3)")
    p.add_argument("--threads", default=None,
                   help="torch intra-op thread counts to compare, e.g. 1,2 "
                        "(default: dannlib.utils.configure_threads's)")
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
    # (b) and IIMT (fp32) without the channels_last convolution weights their configs default to on the CPU
    # (DANNConfig / IIMTConfig ``channels_last=False``): what that default gains
    out["fit_contiguous"] = lambda: _FitVariant("dann", source, target, [0], channels_last=False)
    if "iimt" in s.methods:
        out["iimt_contiguous"] = lambda: _FitVariant("iimt", source, target, [0], channels_last=False)
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
                rows.append(separate_row(b, s.k))
    if len(s.threads) > 1:
        for r in rows:
            base = _row(rows, r["variant"], s.threads[0])
            r[f"over_threads_{s.threads[0]}"] = r["seed_steps_per_s"] / base["seed_steps_per_s"]
    return rows


def separate_row(b: dict, k: int) -> dict:
    """(c) from (b)'s row: a step of (c) is one step of each of K single-seed fits, so it takes K times (b)'s
    wall and CPU seconds; every rate (steps/s and steps per CPU second, overall and by round) is (b)'s / K, and
    seed-steps/s and images/s are (b)'s."""
    return {**b, "variant": "fit_separate", "seeds": k, "steps_per_s": b["steps_per_s"] / k,
            "steps_per_s_each_round": [x / k for x in b["steps_per_s_each_round"]],
            "seconds_each_round": [x * k for x in b["seconds_each_round"]],
            "cpu_steps_per_s": b["cpu_steps_per_s"] / k,
            "cpu_seconds_each_round": [x * k for x in b["cpu_seconds_each_round"]],
            "note": "K single-seed fits one after another: (b)'s measurement, not timed again; a step here is one "
                    "step of each of the K seeds"}


def _batch_of(name: str) -> int:
    for method, (batch, _) in TIMED_METHODS.items():
        if name.startswith(variant_name(method, "fp32")):
            return batch
    return BATCH


def _row(rows: list[dict], name: str, threads: int) -> dict | None:
    return next((r for r in rows if r["variant"] == name and r["threads"] == threads), None)


def ratios(rows: list[dict], s: Settings) -> dict[str, dict]:
    """Per thread count, ratios of seed-steps/s: (b)/(a), (c)/(a), (c)/(b), channels_last's gain
    (``b_over_fit_contiguous``; with IIMT timed, ``iimt_over_iimt_contiguous``), and
    ``<method>_<precision>_over_fp32`` for each timed method (in steps/s; ``..._cpu_time``:
    in steps per CPU second)."""
    out = {}
    for t in s.threads:
        get = lambda n: _row(rows, n, t)
        q = {}
        a, b = get("dataloader"), get("fit")
        if b is not None:
            c = get("fit_separate") or b
            q.update(c_is=c["variant"], b_over_a=b["seed_steps_per_s"] / a["seed_steps_per_s"],
                     c_over_a=c["seed_steps_per_s"] / a["seed_steps_per_s"],
                     c_over_b=c["seed_steps_per_s"] / b["seed_steps_per_s"],
                     b_over_fit_contiguous=b["seed_steps_per_s"] / get("fit_contiguous")["seed_steps_per_s"])
        pairs = [(method, variant_name(method, "fp32"), variant_name(method, p), p) for method in s.methods
                 for p in s.precisions if p != "fp32"]
        for method, base_name, other_name, label in pairs:
            base, other = get(base_name), get(other_name)
            if base is not None and other is not None:
                q[f"{method}_{label}_over_fp32"] = other["steps_per_s"] / base["steps_per_s"]
                q[f"{method}_{label}_over_fp32_cpu_time"] = other["cpu_steps_per_s"] / base["cpu_steps_per_s"]
        iimt, iimt_contiguous = get("iimt"), get("iimt_contiguous")  # IIMT's channels_last default (fp32)
        if iimt is not None and iimt_contiguous is not None:
            q["iimt_over_iimt_contiguous"] = iimt["steps_per_s"] / iimt_contiguous["steps_per_s"]
            q["iimt_over_iimt_contiguous_cpu_time"] = iimt["cpu_steps_per_s"] / iimt_contiguous["cpu_steps_per_s"]
        out[str(t)] = q
    return out


def make_record(s: Settings, rows, setup, loads, tf32, threads_default) -> dict:
    return {
        "benchmark": "benchmarks.bench: digits training throughput",
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


def steps_main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        s = parse_settings(argv)
    except ValueError as exc:
        print(f"benchmarks.bench: {exc}", file=sys.stderr)
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
                  f"channels_last gain {q['b_over_fit_contiguous']:.2f}")
        if "iimt_over_iimt_contiguous" in q:
            print(f"threads={t}: IIMT's channels_last gain (iimt / iimt_contiguous) "
                  f"{q['iimt_over_iimt_contiguous']:.2f} "
                  f"({q['iimt_over_iimt_contiguous_cpu_time']:.2f} in steps per CPU second)")
        prec = [f"{k.removesuffix('_over_fp32')} {v:.2f} ({q[k + '_cpu_time']:.2f})"
                for k, v in q.items() if k.endswith("_over_fp32")]
        if prec:
            print(f"threads={t}: precision / fp32 in steps/s (in steps per CPU second): " + ", ".join(prec))
