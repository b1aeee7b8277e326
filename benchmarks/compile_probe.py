"""torch.compile (inductor, CPU) against eager on DANN's training step, in fp32 and bf16 autocast.

Run from the project root: ``python benchmarks/compile_probe.py [variant ...]``, variants from
``eager compile bf16 bf16_compile`` (default: all four). One torch thread; synthetic (3, 28, 28)
images, batches of 32 + 32 drawn by dannlib's seeded ``Batches``; each variant is warmed up with
5 steps (this includes the compilation), then the variants are timed in 5 interleaved rounds of
100 steps each, so that a change in the machine's load hits all of them alike. Prints the median
steps per second of each and its ratio to eager: compare ratios, not absolute rates, across machines.
``compile`` wraps the network in ``torch.compile(net, dynamic=False)`` (its forward, and through
AOTAutograd its backward); the loss, the optimiser and the GRL schedule stay eager.
"""
from __future__ import annotations

import platform
import statistics
import sys
import time

import torch

from dannlib.domain import Batches
from dannlib.methods import METHODS, make_config
from dannlib.training import Domain

VARIANTS = ("eager", "compile", "bf16", "bf16_compile")


def build(variant: str, source: Domain, target: Domain):
    cls, _ = METHODS["dann"]
    method = cls(make_config("dann", precision="bf16" if variant.startswith("bf16") else "fp32"), source, target, [0])
    if variant.endswith("compile"):
        method.nets[0] = torch.compile(method.nets[0], dynamic=False)
    return method


def main(variants: list[str]) -> None:
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        sys.exit(f"compile_probe: unknown variant(s) {unknown}; choose from {list(VARIANTS)}")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    x, y = torch.rand(2000, 3, 28, 28), torch.randint(0, 10, (2000,))
    source = Domain("source", x, y)
    target = Domain("target", torch.rand(2000, 3, 28, 28), torch.zeros(2000, dtype=torch.long))
    runs = {v: (build(v, source, target), Batches(source, target.unlabelled(), [0], 32)) for v in variants}
    for method, batches in runs.values():
        for _ in range(5):
            method.update(*batches.next(), 0.1)
    rates = {v: [] for v in variants}
    for _ in range(5):
        for v, (method, batches) in runs.items():
            start = time.perf_counter()
            for _ in range(100):
                method.update(*batches.next(), 0.1)
            rates[v].append(100 / (time.perf_counter() - start))
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, 1 thread")
    base = statistics.median(rates[variants[0]])
    for v in variants:
        med = statistics.median(rates[v])
        rounds = [round(r, 1) for r in rates[v]]
        print(f"{v:13s} {med:6.1f} steps/s  x{med / base:.2f} of {variants[0]}  rounds {rounds}")


if __name__ == "__main__":
    main(sys.argv[1:] or list(VARIANTS))
