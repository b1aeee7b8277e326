"""``python -m benchmarks.bench sweep``: processes against threads for a sweep of runs."""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from dannlib.utils import atomic_write, check_positive_int, machine_info, resolve_device

from .steps import bench_environment  # noqa: F401
from .variants import BENCH_DIR  # noqa: F401

# -- processes against threads for a sweep ---------------------------------------------------
#: the three ways of training a sweep's runs on ``--cores`` cores: name -> (ensure's workers,
#: torch threads of the process that trains), with ``c`` = ``--cores``
SWEEP_VARIANTS = {"processes": lambda c: (c, 1), "threads": lambda c: (1, c), "serial": lambda c: (1, 1)}
SWEEP_RATIOS = (("processes", "threads"), ("processes", "serial"), ("threads", "serial"))


def build_sweep_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.bench sweep",
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
    from dann_study.plan import TOYS
    from dannlib.store import RunSpec, digits_data, toy_data

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

    from dannlib import store

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
    """The command lines of other processes running ``dann_study sweep`` (background sweeps that
    share the CPU; their worker processes are not named so), as ``pgrep -f`` would find them."""
    found = []
    for d in Path("/proc").glob("[0-9]*"):
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        if int(d.name) != os.getpid() and "dann_study sweep" in cmd and "grep" not in cmd:
            # absolute paths (log files, the checkout) would tie the record to this machine
            found.append(f"{d.name}: " + re.sub(r"(?<![\w.])/(?:[^\s/]+/)*([^\s/]*)", r"\1", cmd)[:160])
    return found


def time_sweep(name: str, specs: list, cores: int, tmp_root: str, data_root) -> dict:
    """One sweep of ``specs`` the ``name`` way into a fresh store: wall and CPU seconds, and
    what the store holds afterwards (RuntimeError unless exactly the K runs asked for)."""
    import shutil
    import tempfile

    from dannlib import sweep
    from dannlib.store import Store

    workers, threads = SWEEP_VARIANTS[name](cores)
    root = tempfile.mkdtemp(prefix=f"bench-sweep-{name}-", dir=tmp_root)
    try:
        store = Store(root)
        _clear_data_caches()
        c0, t0 = _cpu_seconds(), time.perf_counter()
        run = sweep.ensure
        run(specs, store=store, workers=workers, data_root=data_root, progress=False, threads=threads)
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
    medians (``a_over_b`` ...), per round, of the paired rounds (``..._each_round``), and the median
    of those paired ratios (``..._median_of_rounds``; not the ratio of the medians when the rounds
    ran at different loads).

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
            each = [x / y for x, y in zip(per[a][f"{unit}_each_round"], per[b][f"{unit}_each_round"])]
            ratios[f"{a}_over_{b}{suffix}_each_round"] = each
            ratios[f"{a}_over_{b}{suffix}_median_of_rounds"] = statistics.median(each)
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
        print(f"benchmarks.bench sweep: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else BENCH_DIR / f"bench-sweep-{args.data}.json"
    device = resolve_device(None)
    names = list(SWEEP_VARIANTS)
    record = {"benchmark": "benchmarks.bench sweep: a sweep's runs in worker processes vs torch threads",
              "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "command": "python -m benchmarks.bench sweep " + " ".join(argv),
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
                      for a, b in SWEEP_RATIOS) + " (ratios of the medians); median of the paired rounds' ratios: "
          + ", ".join(f"{a}/{b} {q[f'{a}_over_{b}_median_of_rounds']:.2f} "
                      f"(in-run {q[f'{a}_over_{b}_in_run_median_of_rounds']:.2f})" for a, b in SWEEP_RATIOS))
    print(f"wrote {out}")
    return 0
