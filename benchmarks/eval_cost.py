"""What a monitoring evaluation costs in DANN training steps (the sweep's estimate, benchmarks/README.md):
one torch thread, the digits network (channels_last weights), a step of 32 + 32 images against an evaluation of
2,000 images in batches of 256; synthetic inputs (the cost does not depend on the pixels); best of 3 rounds.
Run from the project root: ``python benchmarks/eval_cost.py``."""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from dannlib import networks
from dannlib.utils import configure_threads


def main(rounds: int = 3, steps: int = 100, evaluations: int = 5) -> float:
    configure_threads(1)
    torch.manual_seed(0)
    net = networks.digits_net(input_mean=torch.zeros(3, 28, 28)).to(memory_format=torch.channels_last)
    x, y, test = torch.rand(64, 3, 28, 28), torch.randint(0, 10, (64,)), torch.rand(2000, 3, 28, 28)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)

    def step():
        optimizer.zero_grad()
        logits, domain = net(x, 0.5)
        (F.cross_entropy(logits, y) + domain.mean()).backward()
        optimizer.step()

    def evaluate():
        with torch.no_grad():
            for i in range(0, len(test), 256):
                net(test[i:i + 256]).argmax(1)

    best = {}
    for _ in range(rounds):
        for name, f, n in (("step", step, steps), ("evaluation", evaluate, evaluations)):
            f()  # warm-up
            start = time.perf_counter()
            for _ in range(n):
                f()
            best[name] = min(best.get(name, float("inf")), (time.perf_counter() - start) / n)
    ratio = best["evaluation"] / best["step"]
    print(f"step {best['step'] * 1e3:.1f} ms; evaluation of 2,000 images {best['evaluation'] * 1e3:.0f} ms "
          f"= {ratio:.1f} steps")
    return ratio


if __name__ == "__main__":
    main()
