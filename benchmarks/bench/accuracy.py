"""``python -m benchmarks.bench accuracy``: DANN on MNIST -> MNIST-M in each precision, same steps and seeds."""
from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
from datetime import datetime, timezone
from pathlib import Path

from dannlib import methods
from dannlib.methods.common import PRECISIONS
from dannlib.training import Domain, fit
from dannlib.utils import atomic_write, check_positive_int, check_seeds, configure_threads, machine_info, resolve_device

from .steps import _int, _parse_list, bench_environment  # noqa: F401
from .variants import BATCH, BENCH_DIR, BENCH_PRECISIONS, build_method  # noqa: F401


# -- bf16 accuracy: DANN on MNIST -> MNIST-M --------------------------------------------------
def build_accuracy_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench accuracy",
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
        print(f"benchmarks.bench accuracy: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else BENCH_DIR / "precision-accuracy.json"
    from dannlib.data import load_domain

    source = Domain("mnist", *load_domain("mnist", "train", None, n=n_train, seed=0, device=device))
    target = Domain("mnist_m", *load_domain("mnist_m", "train", None, n=n_train, seed=0, device=device))
    eval_sets = {"target_test": Domain("mnist_m_test", *load_domain("mnist_m", "test", None, device=device)),
                 "source_test": Domain("mnist_test", *load_domain("mnist", "test", None, device=device))}
    with bench_environment(device):
        threads = configure_threads(args.threads)
        record = {"benchmark": "benchmarks.bench accuracy: DANN MNIST -> MNIST-M, fp32 vs bf16 autocast",
                  "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  "machine": machine_info(device), "command": "python -m benchmarks.bench accuracy " + " ".join(argv),
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
