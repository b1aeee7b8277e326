"""The digits network's pool-then-ReLU order (issue 22), timed against the paper's ReLU-then-pool in one run.

``dannlib.networks.DigitsFeatureExtractor`` computes conv -> max-pool -> ReLU where REFERENCE §1 writes conv -> ReLU
-> max-pool. The numbers are the same forward and backward (ReLU is monotone, so it commutes with a max, and the 2x2
windows do not overlap: tests/test_networks.py checks outputs and gradients exactly), while the ReLU and its backward
touch a quarter of the elements. For every method on the digits network (ADDA's LeNet already pools first) each
round times ``fit`` (no evaluation) for ``--steps`` steps in both orders, alternating, on synthetic images, one thread,
in the method's own precision (``dann_speedrun``: bf16 autocast, as registered; the others fp32); then a monitoring
evaluation (fp32) (2,000 images in batches of 256). Medians over rounds; the ratio is pool-first's speed
over the paper order's, both measured in this run.

Run from the project root: ``python benchmarks/pool_relu.py`` (about 3 minutes); writes ``benchmarks/pool_relu.json``
and prints a Markdown table.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks.bench.variants import _FitVariant, _synthetic  # noqa: E402
from dannlib.methods import make_config  # noqa: E402
from dannlib.networks import DigitsFeatureExtractor, digits_net  # noqa: E402
from dannlib.utils import atomic_write, configure_threads, machine_info  # noqa: E402

#: method -> (batch per domain, channels)
METHODS = {"dann": (32, 3), "source_only": (32, 3), "cdan": (32, 3), "iimt": (32, 3), "iimt (1 channel)": (32, 1),
           "dann_speedrun": (32, 3)}
ORDERS = ("relu_pool", "pool_relu")


def paper_order(nets) -> None:
    """Put every digits feature extractor among ``nets`` back in the conv -> ReLU -> max-pool order."""
    for net in nets:
        fe = getattr(net, "feature_extractor", None)
        if isinstance(fe, DigitsFeatureExtractor):
            for i in range(len(fe) - 1):
                if isinstance(fe[i], nn.MaxPool2d) and isinstance(fe[i + 1], nn.ReLU):
                    fe[i], fe[i + 1] = fe[i + 1], fe[i]


def precision_of(name: str) -> str:
    """The precision the method of a row is registered with (``dann_speedrun``: bf16)."""
    return make_config(name.split()[0]).precision


def time_methods(rounds: int, steps: int) -> dict:
    out = {}
    for name, (batch, channels) in METHODS.items():
        *_, source, target = _synthetic(torch.device("cpu"), channels=channels)
        variants = {}
        for order in ORDERS:
            v = _FitVariant(name.split()[0], source, target, [0], precision_of(name), batch_size=batch)
            if order == "relu_pool":
                paper_order(v.method.networks())
            v.run(3)  # warm-up
            variants[order] = v
        times = {order: [] for order in ORDERS}
        for _ in range(rounds):
            for order, v in variants.items():
                start = time.perf_counter()
                v.run(steps)
                times[order].append((time.perf_counter() - start) / steps)
        out[name] = times
        print(f"{name}: done", file=sys.stderr, flush=True)
    x = _synthetic(torch.device("cpu"))[3].x[:2000]
    nets = {order: digits_net().to(memory_format=torch.channels_last).eval() for order in ORDERS}
    paper_order([nets["relu_pool"]])
    times = {order: [] for order in ORDERS}
    with torch.no_grad():
        for _ in range(rounds):
            for order, net in nets.items():
                start = time.perf_counter()
                for i in range(0, len(x), 256):
                    net(x[i:i + 256]).argmax(1)
                times[order].append(time.perf_counter() - start)
    out["evaluation (2,000 images)"] = times
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5, help="alternating rounds (default 5)")
    p.add_argument("--steps", type=int, default=40, help="timed steps per method, order and round (default 40)")
    p.add_argument("--out", default=str(HERE / "pool_relu.json"))
    args = p.parse_args(argv)
    configure_threads(1)
    raw = time_methods(args.rounds, args.steps)
    table = {name: {"ms": {o: 1e3 * statistics.median(t[o]) for o in ORDERS}} for name, t in raw.items()}
    for name, row in table.items():
        row["speedup"] = row["ms"]["relu_pool"] / row["ms"]["pool_relu"]
        row["precision"] = precision_of(name) if name in METHODS else "fp32"
    record = {"machine": machine_info(), "threads": 1, "rounds": args.rounds, "steps": args.steps,
              "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "results": table, "seconds": raw}
    with atomic_write(args.out) as fh:
        fh.write(json.dumps(record, indent=1) + "\n")
    m = record["machine"]
    print(f"Pool-then-ReLU against the paper's ReLU-then-pool: {m['cpu_count']}-core {m['device_name']} ({m['host']}), "
          f"torch {m['torch']}, one thread, medians of {args.rounds} rounds x {args.steps} steps, {record['when']}\n")
    print("| method | precision | ReLU -> pool, ms | pool -> ReLU, ms | speed-up |\n|---|---|---|---|---|")
    for name, row in table.items():
        print(f"| {name} | {row['precision']} | {row['ms']['relu_pool']:.1f} | {row['ms']['pool_relu']:.1f} | "
              f"{row['speedup']:.2f}x |")


if __name__ == "__main__":
    main()
