"""``python -m benchmarks.equivalence``: does a speed lever leave accuracy unchanged? (issue 22's rule)

One lever against the study's default, paired by seed, for one method's paper runs (:data:`CASES`: DANN as notebook
03 trains it on the released MNIST-M, IIMT as 06 trains it on MNIST -> USPS, ADDA-GAN's stage 2 as 05 trains it on
MNIST -> USPS, both arms from the same stored pre-training), trained once per seed per arm, each run exactly as a
sweep trains it (:func:`dannlib.sweep.ensure` into a scratch run store, one torch thread a worker). The default arm's
runs have the notebook's run keys, so the record also says whether this machine reproduces the committed runs.

The rule: a lever "leaves accuracy unchanged" when the paired 95% t-interval of ``lever - default`` on the target
test accuracy includes 0 and its half-width is under 1 point (``EQUIVALENCE_HALF_WIDTH``), over at least 3 seeds.
Writes ``benchmarks/equivalence-<lever>-<method>.json`` (atomically) and prints a Markdown table naming the machine."""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from datetime import datetime, timezone
from pathlib import Path

from dann_study.plan import plan
from dannlib.results import markdown_table, read_records
from dannlib.stats import paired
from dannlib.store import RunSpec, Store
from dannlib.sweep import ensure
from dannlib.utils import PROJECT_ROOT, atomic_write, check_seeds, machine_info

#: the lever -> the config overrides of its arm; the default arm is the study's own config (no override)
LEVERS = {"contiguous": {"channels_last": False}}
EQUIVALENCE_HALF_WIDTH = 0.01
METRIC = "target_test_acc"
#: method -> (notebook, pair) of the paper runs it is checked on
CASES = {"dann": ("03_dann_vs_source_only", "MNIST->MNIST-M (released)"),
         "iimt": ("06_iimt_mixup_ablation", "MNIST->USPS"),
         "adda_gan": ("05_adda_comparison", "MNIST->USPS")}


def default_specs(method: str, seeds) -> list[RunSpec]:
    """The notebook's paper runs of ``method`` on its pair (:data:`CASES`), one per seed."""
    notebook, pair = CASES[method]
    return [r.spec for r in plan(notebook, "paper", seeds).runs
            if r.tags["pair"] == pair and r.tags["method"] == method]


def lever_spec(spec: RunSpec, lever: str) -> RunSpec:
    """``spec`` with the lever's config overrides (a new run key)."""
    return dataclasses.replace(spec, config={**spec.config, **LEVERS[lever]})


def verdict(comparison, statuses: dict | None = None) -> str:
    """The rule's reading of a :class:`~dannlib.stats.Comparison` of lever - default. ``statuses``: arm -> seed ->
    run status; a lever run that failed or diverged where the default's did not is a change, a default run that
    did not finish ok leaves the lever unjudged. Differences of exactly 0 on every seed (bit-identical runs) read
    as unchanged; the same non-zero difference on every seed is an interval of no width that excludes 0: changed."""
    statuses = statuses or {}
    default = statuses.get("default", {})
    if bad := sorted(s for s, st in default.items() if st != "ok"):
        return f"not judged: default runs not ok on seeds {bad}"
    for arm, by_seed in statuses.items():
        if bad := sorted(s for s, st in by_seed.items() if st != "ok"):
            return f"changed ({arm} runs not ok on seeds {bad})"
    if comparison.n and all(d == 0 for d in comparison.diffs):
        return "unchanged (bit-identical on every seed)" if comparison.n >= 3 else \
            f"not judged: {comparison.n} seed(s), the rule needs at least 3"
    if comparison.n < 3:
        return f"not judged: {comparison.n} seed(s), the rule needs at least 3"
    half = (comparison.ci_high - comparison.ci_low) / 2
    if comparison.ci_low <= 0 <= comparison.ci_high and half < EQUIVALENCE_HALF_WIDTH:
        return "unchanged (interval holds 0, half-width under 1 point)"
    if not comparison.ci_low <= 0 <= comparison.ci_high:
        return "changed (interval excludes 0)"
    return f"not shown unchanged (interval holds 0 but its half-width is {100 * half:.1f} points)"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.equivalence", description=__doc__.splitlines()[0])
    p.add_argument("--lever", default="contiguous", choices=sorted(LEVERS))
    p.add_argument("--method", default="dann", choices=sorted(CASES), help="whose paper runs (default dann)")
    p.add_argument("--seeds", default="0,1,2,3,4", help="seeds (default 0,1,2,3,4; the rule needs at least 3)")
    p.add_argument("--workers", type=int, default=2, help="worker processes, one torch thread each (default 2)")
    p.add_argument("--store", default=str(PROJECT_ROOT / ".tmp" / "equivalence-store"),
                   help="scratch run store (default .tmp/equivalence-store; resumable)")
    p.add_argument("--data-root", help="the data root (default: $DANNLIB_DATA, else data/)")
    p.add_argument("--out", help="JSON record (default benchmarks/equivalence-<lever>-<method>.json)")
    args = p.parse_args(argv)
    try:
        seeds = check_seeds([int(s) for s in args.seeds.split(",")])
    except ValueError as exc:
        print(f"benchmarks.equivalence: --seeds: {exc}", file=sys.stderr)
        return 2
    base = default_specs(args.method, seeds)
    notebook, pair = CASES[args.method]
    arms = {"default": base, args.lever: [lever_spec(s, args.lever) for s in base]}
    store = Store(args.store, data_root=args.data_root)
    runs = ensure([s for specs in arms.values() for s in specs], store=store, workers=args.workers,
                  data_root=args.data_root, threads=1)  # one thread a run, in a worker or in this process
    statuses = {arm: {s.seed: runs[s].status if s in runs else "failed" for s in specs} for arm, specs in arms.items()}
    values = {arm: {s.seed: runs[s].final[METRIC] for s in specs if statuses[arm][s.seed] == "ok"}
              for arm, specs in arms.items()}
    seconds = {arm: {s.seed: runs[s].seconds for s in specs if s in runs} for arm, specs in arms.items()}
    comparison = paired(values[args.lever], values["default"], a_name=args.lever, b_name="default")
    committed = {r["seed"]: r[METRIC] for r in read_records(PROJECT_ROOT / "results", notebook, "paper")
                 if r.get("pair") == pair and r.get("method") == args.method and r.get("seed") in seeds}
    record = {"benchmark": __doc__.splitlines()[0], "lever": args.lever, "overrides": LEVERS[args.lever],
              "method": args.method, "notebook": notebook,
              "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine_info(),
              "workers": args.workers, "metric": METRIC, "pair": pair, "values": values, "seconds": seconds,
              "committed_default": committed,
              "statuses": statuses, "failed": [list(f) for f in ensure.last_summary.failed],
              "comparison": {**{("stats_verdict" if k == "verdict" else k): v for k, v in comparison.as_row(4).items()},
                             "ci_low": comparison.ci_low, "ci_high": comparison.ci_high,
                             "diffs": dict(zip(comparison.seeds, comparison.diffs))},
              "verdict": verdict(comparison, statuses)}
    out = Path(args.out) if args.out else Path(__file__).parent / f"equivalence-{args.lever}-{args.method}.json"
    with atomic_write(out) as fh:
        json.dump(record, fh, indent=1, sort_keys=True)
    rows = [[seed, f"{values['default'].get(seed, float('nan')):.4f}", f"{committed.get(seed, float('nan')):.4f}",
             f"{values[args.lever].get(seed, float('nan')):.4f}",
             f"{seconds[args.lever].get(seed, float('nan')) / seconds['default'].get(seed, float('nan')):.2f}"]
            for seed in seeds]
    print(f"{args.method}, {notebook}, {pair}; machine: {record['machine'].get('cpu_model')}, "
          f"{record['machine'].get('platform')}, {args.workers} workers, one thread each")
    print(markdown_table(["seed", "default", "default, committed", args.lever, "seconds, lever / default"], rows))
    print(f"\n{args.lever} - default: {comparison.mean:+.4f} {comparison.as_row(4)['95% CI']} "
          f"over {comparison.n} seeds: {record['verdict']}\nwrote {out}")
    return 1 if any(st != "ok" for by_seed in statuses.values() for st in by_seed.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
