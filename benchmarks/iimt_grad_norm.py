"""Per-step gradient norms of IIMT under the paper recipe (MNIST -> MNIST-M, notebook 06's
paper-profile run of one seed), to see where a run runs away and how a clipping threshold
changes that. Label-free: it looks at gradient norms and training losses only, never at target
labels.

    python benchmarks/iimt_grad_norm.py --seed 1 --stop 3500 --clip 10 --out grad_norms_s1_c10.json

It trains the planned run (``dann_study.plan``, profile paper) with ``grad_clip`` set to ``--clip``
(``0``: no clipping) and records, for each step, the whole gradient's L2 norm before clipping
and the source label, total and domain losses, until ``--stop`` steps (the learning-rate and
lambda schedules are those of the full 10,000-step run). It prints a summary per 250 steps
and writes the per-step rows (JSON, written whole or not at all).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile

import torch

from dann_study.plan import plan
from dannlib.methods import iimt, train
from dannlib.store import load_data


class _Stop(Exception):
    pass


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--stop", type=int, default=2300, help="steps to train before stopping (of the 10,000 planned)")
    ap.add_argument("--clip", type=float, default=0.0, help="grad_clip; 0: none")
    ap.add_argument("--pair", default="MNIST->MNIST-M")
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    runs = [r.spec for r in plan("06", "paper").runs
            if r.tags["method"] == "iimt" and r.tags["pair"] == a.pair and r.spec.seed == a.seed]
    if not runs:
        raise SystemExit(f"no paper-profile IIMT run of seed {a.seed} on {a.pair} in notebook 06's plan")
    spec = runs[0]
    source, target, _ = load_data(spec.data)
    rows = []
    step_one = iimt.IIMT.step_one

    def observed(self, i, xs, ys, xt, p):  # the method's own step, observed
        parts = step_one(self, i, xs, ys, xt, p)
        rows.append({"step": len(rows) + 1, **{k: float(parts[k]) for k in
                                               ("grad_norm", "label_loss", "total_loss", "domain_loss")}})
        if len(rows) >= a.stop:
            raise _Stop
        return parts

    iimt.IIMT.step_one = observed
    config = {**spec.config, "eval_every": None, "grad_clip": a.clip or None}
    try:
        train("iimt", source, target.unlabelled(), seeds=[a.seed], progress=True, **config)
    except _Stop:
        pass
    finally:
        iimt.IIMT.step_one = step_one
    for lo in range(0, len(rows), 250):
        w = rows[lo:lo + 250]
        g = [r["grad_norm"] for r in w]
        print(f"steps {lo + 1:5d}-{lo + len(w):5d}: grad norm median {statistics.median(g):.3g}, max {max(g):.3g}; "
              f"max domain loss {max(r['domain_loss'] for r in w):.3g}, max label loss "
              f"{max(r['label_loss'] for r in w):.3g}")
    g = sorted(r["grad_norm"] for r in rows)
    print(f"all {len(rows)} steps: median {statistics.median(g):.3g}, 99th percentile {g[int(0.99 * len(g))]:.3g}")
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(a.out)) or ".", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump({"seed": a.seed, "pair": a.pair, "clip": a.clip or None, "key": spec.key, "rows": rows}, f)
    os.replace(tmp, a.out)


if __name__ == "__main__":
    main()
