"""How close each method's training step comes to this CPU's best measured rate (the roofline), one thread (issue 22).

A step's floating-point operations are counted by ``torch.utils.flop_counter.FlopCounterMode`` (convolutions,
their backward passes and the fully connected layers: the operations that cost; element-wise work is not counted),
on one step of ``fit`` with the method's paper settings on synthetic images. Its rate is timed as ``fit`` (no
evaluation) for ``--steps`` steps. The peak of a precision is the larger of two kernels' median rates, timed in
float32 and in bfloat16 in the same rounds: a square ``torch.mm`` (``--gemm`` 1024) and a 5x5 convolution of 64 to 64
channels on 32 maps of 24x24 (channels_last). Each round times the four kernels and then every method, and the
medians over ``--rounds`` are kept, so every ratio compares numbers measured minutes apart on one machine.

``efficiency_fp32_peak`` = (step FLOPs x steps/s) / the float32 peak (``efficiency_own_peak``: over the peak of the
step's own precision). A float32 step at efficiency e can be made about 1/e times faster at most while it computes
the same operations in float32 (if no kernel beats the best rate measured here); only fewer operations (another
recipe) or a lower precision (bfloat16: other numbers) can go further.

Run from the project root: ``python benchmarks/roofline.py`` (about a minute); writes ``benchmarks/roofline.json``
(atomically) and prints a Markdown table.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks.bench.variants import _FitVariant, _synthetic  # noqa: E402
from dann_study.plan import NOTEBOOKS, plan_specs  # noqa: E402
from dannlib.domain import Domain  # noqa: E402
from dannlib.methods import METHODS, make_config, train  # noqa: E402
from dannlib.utils import atomic_write, configure_threads, machine_info  # noqa: E402

#: row -> (registered method, precision, batch per domain, image channels)
VARIANTS = {"dann": ("dann", "fp32", 32, 3), "dann bf16": ("dann", "bf16", 32, 3),
            "source_only": ("source_only", "fp32", 32, 3), "cdan": ("cdan", "fp32", 32, 3),
            "iimt": ("iimt", "fp32", 32, 3), "adda_gan (stage 2)": ("adda_gan", "fp32", 128, 1)}


def step_flops(variant: _FitVariant) -> int:
    """The floating-point operations of one training step of ``variant`` (after its warm-up)."""
    with FlopCounterMode(display=False) as counter:
        variant.run(1)
    return int(counter.get_total_flops())


def gemm_flops_per_second(dtype: torch.dtype, n: int, repeats: int = 5) -> float:
    """The best of ``repeats`` timings of an ``n x n`` by ``n x n`` matrix product, in FLOP/s."""
    gen = torch.Generator().manual_seed(0)
    a, b = (torch.randn(n, n, generator=gen).to(dtype) for _ in range(2))
    for _ in range(2):
        a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * n ** 3 / best


def conv_flops_per_second(dtype: torch.dtype, repeats: int = 5) -> float:
    """The best of ``repeats`` timings of a 5x5 convolution of 64 to 64 channels on 32 maps of 24x24 (channels_last,
    no gradient): a convolution shape this CPU's kernels run near their best, in FLOP/s."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(32, 64, 24, 24, generator=gen).to(dtype).contiguous(memory_format=torch.channels_last)
    conv = torch.nn.Conv2d(64, 64, 5).to(dtype).to(memory_format=torch.channels_last)
    with torch.no_grad():
        for _ in range(2):
            conv(x)
        best = min(_timed(lambda: conv(x)) for _ in range(repeats))
    return 2 * 32 * 64 * 20 * 20 * 64 * 25 / best


def _timed(work) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def measure(rounds: int, steps: int, n: int) -> dict:
    variants, flops = {}, {}
    for row, (method, precision, batch, channels) in VARIANTS.items():
        *_, source, target = _synthetic(torch.device("cpu"), channels=channels)
        v = _FitVariant(method, source, target, [0], precision=precision, batch_size=batch)
        v.run(3)  # warm-up
        variants[row], flops[row] = v, step_flops(v)
    peaks = {("gemm", "fp32"): lambda: gemm_flops_per_second(torch.float32, n),
             ("gemm", "bf16"): lambda: gemm_flops_per_second(torch.bfloat16, n),
             ("conv", "fp32"): lambda: conv_flops_per_second(torch.float32),
             ("conv", "bf16"): lambda: conv_flops_per_second(torch.bfloat16)}
    times = {**{" ".join(k): [] for k in peaks}, **{row: [] for row in VARIANTS}}
    for r in range(rounds):
        for k, measure_peak in peaks.items():
            times[" ".join(k)].append(measure_peak())
        for row, v in variants.items():
            times[row].append(steps / _timed(lambda: v.run(steps)))
        print(f"round {r + 1}/{rounds} done", file=sys.stderr)
    # the best rate this CPU showed in each precision: the larger of the two kernels' medians
    peak32, peak16 = (max(statistics.median(times[f"{kind} {p}"]) for kind in ("gemm", "conv"))
                      for p in ("fp32", "bf16"))
    rows = {}
    for row, (method, precision, batch, _) in VARIANTS.items():
        rate = statistics.median(times[row])
        rows[row] = {"method": method, "precision": precision, "batch_per_domain": batch,
                     "gflop_per_step": flops[row] / 1e9, "steps_per_second": rate,
                     "gflop_per_second": flops[row] * rate / 1e9, "efficiency_fp32_peak": flops[row] * rate / peak32,
                     "efficiency_own_peak": flops[row] * rate / (peak16 if precision == "bf16" else peak32)}
    return {"gemm_n": n, **{f"{k.replace(' ', '_')}_gflop_per_second": statistics.median(v) / 1e9
                            for k, v in times.items() if k.split()[0] in ("gemm", "conv")},
            "peak_fp32_gflop_per_second": peak32 / 1e9, "peak_bf16_gflop_per_second": peak16 / 1e9,
            "bf16_over_fp32_peak": peak16 / peak32, "rows": rows, "rounds": times}


def _tiny_data(data: dict, n: int = 256) -> tuple[Domain, Domain]:
    gen = torch.Generator().manual_seed(0)
    shape, classes = ((2,), 2) if data["kind"] == "toy" else ((data["channels"], data["size"], data["size"]), 10)
    x = lambda: torch.rand(n, *shape, generator=gen)  # noqa: E731
    return Domain("source", x(), torch.randint(0, classes, (n,), generator=gen)), Domain("target", x())


def run_flops(spec) -> int:
    """The floating-point operations of the training steps of one stored run's spec: FLOPs of a 2-step run minus a
    1-step run (whatever is done once, as ADDA's inline pre-training, cancels) times the run's steps."""
    cls, _ = METHODS[spec.method]
    config = make_config(spec.method, **spec.config)
    steps = cls.total_steps(config)
    key = "pretrain_steps" if spec.method == "adda_pretrain" else "steps"
    source, target = _tiny_data(spec.data)
    counts = []
    for n in (1, 2):
        extra = {key: n, **({"pretrain_steps": 1} if key == "steps" and hasattr(config, "pretrain_steps") else {})}
        with FlopCounterMode(display=False) as counter, contextlib.redirect_stdout(io.StringIO()):
            train(spec.method, source, target, seeds=[spec.seed], progress=False, **{**spec.config, **extra})
        counts.append(counter.get_total_flops())
    return steps * (counts[1] - counts[0])


def profile_flops(profile: str = "paper") -> dict:
    """The training FLOPs of every run a profile's notebooks need (their plans and ADDA's pre-training runs), by
    method; one count per distinct (method, settings, data shape), since the seed does not change a step's work."""
    specs = {}
    for number in NOTEBOOKS:
        for spec in plan_specs(number, profile, None):
            specs.update({s.key: s for s in [*spec.dependencies(), spec]})
    per_step, by_method = {}, {}
    for spec in specs.values():
        shape = {k: spec.data.get(k) for k in ("kind", "channels", "size")}
        settings = json.dumps([spec.method, {k: v for k, v in spec.config.items()
                                             if k not in ("steps", "pretrain_steps", "eval_every")}, shape],
                              sort_keys=True, default=str)
        cls, _ = METHODS[spec.method]
        steps = cls.total_steps(make_config(spec.method, **spec.config))
        if settings not in per_step:
            per_step[settings] = run_flops(spec) / steps
        by_method[spec.method] = by_method.get(spec.method, 0) + steps * per_step[settings]
    return {"runs": len(specs), "distinct_settings": len(per_step), "flops_by_method": by_method,
            "flops": sum(by_method.values())}


def table(result: dict) -> str:
    g = {k: result[f"{k}_gflop_per_second"] for k in ("gemm_fp32", "gemm_bf16", "conv_fp32", "conv_bf16")}
    lines = [f"One thread. Best rates: fp32 {result['peak_fp32_gflop_per_second']:.0f} GFLOP/s, bf16 "
             f"{result['peak_bf16_gflop_per_second']:.0f} GFLOP/s ({result['bf16_over_fp32_peak']:.1f}x); "
             f"matmul {result['gemm_n']}^3 {g['gemm_fp32']:.0f} / {g['gemm_bf16']:.0f}, "
             f"5x5 convolution 64->64 {g['conv_fp32']:.0f} / {g['conv_bf16']:.0f} (fp32 / bf16).", "",
             "| step | GFLOP a step | steps/s | GFLOP/s | of the fp32 best | of its precision's best |",
             "|---|---|---|---|---|---|"]
    for row, r in result["rows"].items():
        lines.append(f"| {row} | {r['gflop_per_step']:.3f} | {r['steps_per_second']:.1f} | "
                     f"{r['gflop_per_second']:.0f} | {r['efficiency_fp32_peak']:.0%} | "
                     f"{r['efficiency_own_peak']:.0%} |")
    if floor := result.get("profile"):
        lines += ["", f"The {floor['name']} profile: {floor['runs']} runs, {floor['flops'] / 1e15:.2f} PFLOP of "
                  f"training steps; at the best fp32 rate {floor['hours_at_fp32_peak']:.1f} h of one thread, at the "
                  f"best bf16 rate {floor['hours_at_bf16_peak']:.1f} h (steps only: no evaluation, scoring or data "
                  "loading)."]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--gemm", type=int, default=1024, help="the side of the square matrices of the matmul")
    parser.add_argument("--profile", default="paper", help="the profile whose training FLOPs are counted ('' for none)")
    parser.add_argument("--out", default=str(HERE / "roofline.json"))
    args = parser.parse_args(argv)
    configure_threads(1)
    result = {"machine": machine_info(), "threads": torch.get_num_threads(), "steps": args.steps,
              "date": time.strftime("%Y-%m-%d"), **measure(args.rounds, args.steps, args.gemm)}
    if args.profile:
        counted = profile_flops(args.profile)
        result["profile"] = {"name": args.profile, **counted, **{
            f"hours_at_{p}_peak": counted["flops"] / (result[f"peak_{p}_gflop_per_second"] * 1e9) / 3600
            for p in ("fp32", "bf16")}}
    with atomic_write(Path(args.out)) as fh:
        fh.write(json.dumps(result, indent=1) + "\n")
    print(table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
