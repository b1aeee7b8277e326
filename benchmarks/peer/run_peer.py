"""A peer side by side (issue 22): pytorch-adapt's DANN beside dannlib's, in one process, on
the same data, the same network and the same batches, one torch thread each; steps/s and the
target test accuracy after the same number of steps.

    python benchmarks/peer/run_peer.py [--steps 500] [--seed 0] [--install]
    python benchmarks/peer/run_peer.py --render benchmarks/peer/peer-bench.json   (table + figure only)

What is compared is the *training machinery*, not the networks. Every side trains the digits
network of :func:`dannlib.networks.digits_net` (REFERENCE §1), built by
``dannlib.methods.common.NETWORKS["digits"]`` under the same seed, so each side starts from
identical weights (checked), and draws its batches from :class:`dannlib.training.Batches` with
the same seed, so each sees the identical 32 source + 32 target images at every step. The
recipe is DANN's digits recipe: SGD with momentum 0.9, the learning rate of eq. 7, lambda of
eq. 6 (Ganin & Lempitsky 2015), for ``--steps`` steps.

- ``dannlib``: :func:`dannlib.training.fit` with :class:`dannlib.methods.DANN` (its defaults:
  channels_last convolution weights on the CPU; no evaluation inside the timed loop).
- ``pytorch-adapt``: the network's parts handed to pytorch-adapt's own ``DANNHook`` (its
  features, discriminator-loss, classification-loss and optimizer hooks; its
  ``GradientReversal`` layer, whose ``update_weight`` sets eq. 6's lambda every step) as
  ``G`` (input mean subtraction + feature extractor), ``C`` (label predictor) and ``D``
  (domain classifier, one logit), one ``torch.optim.SGD`` per model, as its documentation
  does. Its default weighter averages the three losses, ``(L_y + L_d^src + L_d^tgt) / 3``;
  here a ``SumWeighter`` with weights 1, 1/2, 1/2 gives dannlib's objective
  ``L_y + L_d`` (``L_d``: the mean binary cross-entropy over the 64 images of both
  domains), so both sides descend the same loss, and the accuracies should agree up to
  float rounding, which grows over the steps. Contiguous weights (the network as a user of
  the peer would have it).
- ``pytorch-adapt+channels_last``: the same with the network's convolution weights in
  channels_last, as dannlib sets them on the CPU: separates what the layout gains from
  what the loop costs.

Timing: each side is warmed up (``--warmup`` steps on a throwaway network), then its
``--steps`` steps are timed by wall clock (``time.perf_counter``) and by the process's CPU
time (``time.process_time``: at one thread it leaves out the time spent waiting for a core
that other processes hold, so its ratios are steadier on a shared machine). The optimiser
steps are counted (a hook on an optimiser), and a side that did not make exactly
``--steps`` of them is an error. Evaluation is not timed: after training, each network is
evaluated on the full MNIST-M (released) and MNIST test sets.

Outputs (``--out-dir``, default this folder): ``peer-bench.json`` (the record: machine,
versions, settings, per side seconds, steps/s, accuracies, the ratios), ``peer-bench.md``
(the table, built from the record) and ``peer-bench.png`` (the ratios dannlib / peer, not
absolute times). When pytorch-adapt is not installed in ``--peer-dir`` (or does not import,
or the data are missing), it prints one line ``skipped: <reason>``, writes the record and a
table saying so (and removes a figure of an earlier run), and exits 0. ``--install`` first
runs ``install.sh`` (the pinned versions of ``requirements.txt``) when the folder does not
hold exactly those pins; a failed install is such a skip.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
PEER_DIR = HERE / ".peer-packages"
REQUIREMENTS = HERE / "requirements.txt"
STAMP = "requirements.installed.txt"
OURS = "dannlib"
PEER_SIDES = ("pytorch-adapt", "pytorch-adapt+channels_last")
SIDES = (OURS,) + PEER_SIDES
OUT_NAMES = {"record": "peer-bench.json", "table": "peer-bench.md", "figure": "peer-bench.png"}


# -- the peer's installation ---------------------------------------------------------------------
def pinned(requirements: Path = REQUIREMENTS) -> dict[str, str]:
    """``{package: version}`` of the ``name==version`` lines of ``requirements``."""
    out = {}
    for line in requirements.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            out[name.strip()] = version.strip()
    return out


def peer_problem(peer_dir: Path, requirements: Path = REQUIREMENTS) -> str | None:
    """Why ``peer_dir`` cannot serve as the peer (None: it holds exactly the pinned install)."""
    if not (peer_dir / "pytorch_adapt").is_dir():
        return f"pytorch-adapt is not installed in {peer_dir} (sh benchmarks/peer/install.sh installs it)"
    stamp = peer_dir / STAMP
    if not stamp.is_file() or stamp.read_text() != requirements.read_text():
        return (f"{peer_dir} does not hold the versions pinned in {requirements.name} "
                "(rerun sh benchmarks/peer/install.sh)")
    return None


def install_peer(peer_dir: Path) -> str | None:
    """Run ``install.sh`` with this interpreter's pip; the reason it failed, or None."""
    if peer_dir != PEER_DIR:
        return f"--install installs into {PEER_DIR} only, not {peer_dir}"
    try:
        out = subprocess.run(["sh", str(HERE / "install.sh")], env={**os.environ, "PYTHON": sys.executable},
                             capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"install.sh did not run: {exc}"
    if out.returncode != 0:
        lines = [ln for ln in (out.stderr + out.stdout).splitlines() if ln.strip() and "WARNING" not in ln]
        return f"install.sh failed (exit {out.returncode}): {lines[-1] if lines else 'no message'}"
    return None


def import_peer(peer_dir: Path):
    """``(pytorch_adapt, None)``, or ``(None, reason)``. ``peer_dir`` goes to the *end* of
    ``sys.path``: torch, torchvision and numpy keep coming from the project's environment."""
    problem = peer_problem(peer_dir)
    if problem:
        return None, problem
    if str(peer_dir) not in sys.path:
        sys.path.append(str(peer_dir))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torchmetrics 0.9.3: pkg_resources is deprecated
            import pytorch_adapt
            import pytorch_adapt.hooks  # noqa: F401
            import pytorch_adapt.weighters  # noqa: F401
    except Exception as exc:  # any failure of the peer's import is a reason to skip, not a crash
        return None, f"pytorch-adapt does not import: {type(exc).__name__}: {exc}"
    import torch

    if not Path(pytorch_adapt.__file__).resolve().is_relative_to(peer_dir.resolve()):
        return None, f"pytorch_adapt was imported from {pytorch_adapt.__file__}, not from {peer_dir}"
    if Path(torch.__file__).resolve().is_relative_to(peer_dir.resolve()):
        return None, f"torch was imported from the peer's folder {peer_dir}, not from the project's environment"
    return pytorch_adapt, None


# -- the arithmetic: rates, ratios, table ----------------------------------------------------------
def rates(steps: int, wall_s: float, cpu_s: float) -> dict:
    """Steps per wall-clock second and per CPU second."""
    return {"steps_per_s": steps / wall_s, "steps_per_cpu_s": steps / cpu_s}


def ratios(sides: dict[str, dict], ours: str = OURS) -> dict[str, dict]:
    """``{peer side: {"wall": ours / peer steps/s, "cpu": ours / peer steps per CPU second}}``:
    above 1, dannlib trains faster."""
    o = sides[ours]
    return {name: {"wall": o["steps_per_s"] / s["steps_per_s"], "cpu": o["steps_per_cpu_s"] / s["steps_per_cpu_s"]}
            for name, s in sides.items() if name != ours}


def machine_line(machine: dict) -> str:
    return (f"{machine.get('cpu_model', '?')}, {machine.get('cpu_count', '?')} cores, "
            f"torch {machine.get('torch', '?')}, {machine.get('torch_threads', '?')} thread(s)")


def render_table(record: dict) -> str:
    """The Markdown table of a record (a skipped record: one line saying why)."""
    head = ["# pytorch-adapt's DANN beside dannlib's (benchmarks/peer/run_peer.py)", ""]
    if record["status"] == "skipped":
        return "\n".join(head + [f"skipped: {record['reason']}", ""])
    s = record["settings"]
    lines = head + [
        f"{record['created']}; {machine_line(record['machine'])}; {s['steps']} steps per side, batch "
        f"{s['batch_size']} + {s['batch_size']}, seed {s['seed']}, {s['n_train']} training images per domain; "
        f"{s['source']} -> {s['target']}; peer: pytorch-adapt {record['versions'].get('pytorch-adapt', '?')}.",
        "",
        "| side (in the order run) | steps/s (wall) | steps/s (CPU) | target test acc | source test acc "
        "| dannlib / side (wall) | dannlib / side (CPU) | load (1 min), before -> after |",
        "|---|---|---|---|---|---|---|---|",
    ]
    r = record["ratios"]
    for name, side in record["sides"].items():
        q = r.get(name)
        load = side.get("load_average_1min")
        lines.append(f"| {name} | {side['steps_per_s']:.1f} | {side['steps_per_cpu_s']:.1f} | "
                     f"{side['target_test_acc']:.4f} | {side['source_test_acc']:.4f} | "
                     + (f"{q['wall']:.2f} | {q['cpu']:.2f} | " if q else "1 | 1 | ")
                     + (f"{load[0]:.1f} -> {load[1]:.1f} |" if load else "? |"))
    lines += ["", "Ratios above 1: dannlib makes more steps per second. Same network, initial weights, batches and "
              "objective on every side; only the ratios within one run are comparable across machines. CPU time "
              "(one thread) leaves out the waits for a core that other processes hold: on a shared machine its "
              "ratio is the steadier one.", ""]
    return "\n".join(lines)


def ratio_figure(record: dict):
    """Bars of dannlib / peer steps per second (wall and CPU time) for each peer side; a
    ``matplotlib.figure.Figure`` (no pyplot, no backend switch)."""
    from matplotlib.figure import Figure

    names = list(record["ratios"])
    fig = Figure(figsize=(6.4, 3.6), layout="constrained")
    ax = fig.add_subplot()
    width = 0.38
    for j, (key, label) in enumerate([("wall", "wall clock"), ("cpu", "CPU time")]):
        xs = [i + (j - 0.5) * width for i in range(len(names))]
        vals = [record["ratios"][n][key] for n in names]
        bars = ax.bar(xs, vals, width, label=label)
        ax.bar_label(bars, fmt="%.2f", padding=2)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xticks(range(len(names)), [f"dannlib / {n}" for n in names])
    ax.set_ylabel("ratio of steps per second")
    ax.set_ylim(0, max(1.2, 1.15 * max(max(q.values()) for q in record["ratios"].values())))
    ax.legend(loc="lower right")
    s = record["settings"]
    ax.set_title(f"DANN, {s['steps']} steps, batch {s['batch_size']}+{s['batch_size']}: "
                 f"dannlib / pytorch-adapt\n{machine_line(record['machine'])}", fontsize=9)
    return fig


def write_outputs(record: dict, out_dir: Path) -> None:
    from dannlib.utils import atomic_path, atomic_write

    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_write(out_dir / OUT_NAMES["record"]) as fh:
        json.dump(record, fh, indent=1)
    with atomic_write(out_dir / OUT_NAMES["table"]) as fh:
        fh.write(render_table(record))
    figure = out_dir / OUT_NAMES["figure"]
    if record["status"] == "skipped":
        figure.unlink(missing_ok=True)  # never a figure of another run than the table's
        return
    with atomic_path(figure) as tmp:
        ratio_figure(record).savefig(tmp, format="png", dpi=120)


# -- the two training loops ------------------------------------------------------------------------
def build_network(source, target, seed: int):
    """The digits network exactly as :class:`dannlib.methods.DANN` builds it for ``seed``."""
    from dannlib.methods.common import NETWORKS
    from dannlib.utils import seeded

    with seeded(seed):
        return NETWORKS["digits"](source, target)


def peer_trainer(pa, net, config, channels_last: bool):
    """pytorch-adapt's DANN on ``net``'s parts: returns ``(step(xs, ys, xt, p), optimizers)``.
    ``net`` is trained in place (its parameters are shared with G, C and D)."""
    import torch
    from torch import nn

    class Features(nn.Module):  # G: the input mean subtraction of DANNNet, then the feature extractor
        def __init__(self, net):
            super().__init__()
            self.feature_extractor = net.feature_extractor
            self.register_buffer("input_mean", net.input_mean)

        def forward(self, x):
            return self.feature_extractor(x - self.input_mean)

    class DomainLogit(nn.Module):  # D: one logit per image, (N,), as pytorch-adapt's Discriminator returns
        def __init__(self, domain_classifier):
            super().__init__()
            self.domain_classifier = domain_classifier

        def forward(self, x):
            return self.domain_classifier(x).squeeze(-1)

    if channels_last:
        net.to(memory_format=torch.channels_last)
    models = {"G": Features(net), "C": net.label_predictor, "D": DomainLogit(net.domain_classifier)}
    optimizers = [torch.optim.SGD(m.parameters(), lr=config.lr, momentum=config.momentum,
                                  weight_decay=config.weight_decay) for m in models.values()]
    f_hook = pa.hooks.FeaturesForDomainLossHook()
    grl_hook = pa.hooks.GradientReversalHook(weight=0.0, apply_to=f_hook.out_keys)
    weighter = pa.weighters.SumWeighter(weights={"src_domain_loss": 0.5, "target_domain_loss": 0.5})
    hook = pa.hooks.DANNHook(optimizers, weighter=weighter, f_hook=f_hook, gradient_reversal=grl_hook)
    domain_labels = {}  # batch size -> (source labels 0, target labels 1), made once

    def step(xs, ys, xt, p: float) -> dict:
        grl_hook.fn.update_weight(config.grl_lambda_at(p))  # eq. 6
        for opt in optimizers:
            for group in opt.param_groups:
                group["lr"] = config.lr_at(p)  # eq. 7
        n = xs.shape[0]
        if n not in domain_labels:
            domain_labels[n] = (torch.zeros(n, device=xs.device), torch.ones(n, device=xs.device))
        src_domain, target_domain = domain_labels[n]
        _, losses = hook({**models, "src_imgs": xs, "src_labels": ys, "target_imgs": xt,
                          "src_domain": src_domain, "target_domain": target_domain})
        return losses

    return step, optimizers


def _count_steps(optimizer) -> list[int]:
    count = [0]
    optimizer.register_step_post_hook(lambda *_: count.__setitem__(0, count[0] + 1))
    return count


def train_ours(source, target, config, seed: int, steps: int):
    """dannlib's DANN: ``fit`` + ``methods.DANN``; ``(network, optimiser steps counted)``."""
    from dannlib.methods import DANN
    from dannlib.training import fit

    method = DANN(config, source, target, [seed])
    count = _count_steps(method.optimizer)
    fit(method, source, target, steps=steps, batch_size=config.batch_size, progress=False)
    return method.nets[0], count[0]


def train_peer(pa, source, target, config, seed: int, steps: int, channels_last: bool, net=None):
    """pytorch-adapt's DANN over dannlib's batches; ``(network, optimiser steps counted)``."""
    from dannlib.training import Batches

    net = build_network(source, target, seed) if net is None else net
    step, optimizers = peer_trainer(pa, net, config, channels_last)
    count = _count_steps(optimizers[0])
    batches = Batches(source, target, [seed], config.batch_size)
    net.train(True)
    for i in range(steps):
        step(*batches.next(), i / steps)
    net.train(False)
    return net, count[0]


def timed(fn):
    """``(result, wall seconds, CPU seconds)`` of ``fn()``."""
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


# -- main ------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=500, help="training steps per side (default 500)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=32, help="per domain (default 32: 32 source + 32 target)")
    p.add_argument("--n-train", type=int, default=20000,
                   help="training images per domain (random subset, seed 0; default 20000)")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps per side on a throwaway network (default 5)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    p.add_argument("--sides", default=",".join(SIDES), help=f"comma-separated, of {', '.join(SIDES)} (default all)")
    p.add_argument("--peer-dir", type=Path, default=PEER_DIR, help="the peer's --target folder")
    p.add_argument("--install", action="store_true", help="run install.sh first unless the pins are installed")
    p.add_argument("--out-dir", type=Path, default=HERE, help="where the record, table and figure go")
    p.add_argument("--render", type=Path, default=None, metavar="RECORD",
                   help="train nothing: rebuild the table and figure of a stored peer-bench.json into --out-dir")
    return p


def skip(reason: str, out_dir: Path, command: str) -> int:
    print(f"skipped: {reason}")
    write_outputs({"benchmark": "pytorch-adapt's DANN beside dannlib's", "status": "skipped", "reason": reason,
                   "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "command": command},
                  out_dir)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.render is not None:  # results are data: restyling never retrains
        write_outputs(json.loads(args.render.read_text()), args.out_dir)
        print(f"wrote {args.out_dir / OUT_NAMES['table']}")
        return 0
    command = "python benchmarks/peer/run_peer.py " + " ".join(sys.argv[1:] if argv is None else argv)
    sides = [s.strip() for s in args.sides.split(",") if s.strip()]
    if OURS not in sides or any(s not in SIDES for s in sides) or len(sides) < 2:
        print(f"run_peer.py: --sides must name {OURS} and at least one of {', '.join(PEER_SIDES)}", file=sys.stderr)
        return 2
    peer_dir = args.peer_dir.resolve()
    if args.install and peer_problem(peer_dir):
        reason = install_peer(peer_dir)
        if reason:
            return skip(reason, args.out_dir, command)
    pa, reason = import_peer(peer_dir)
    if pa is None:
        return skip(reason, args.out_dir, command)

    import torch

    from dannlib.data import DataNotFoundError
    from dannlib.methods import make_config
    from dannlib.store import digits_data, load_data
    from dannlib.training import accuracy
    from dannlib.utils import configure_threads, machine_info

    threads = configure_threads(args.threads)
    data = digits_data("mnist", "mnist_m_released", n_source=args.n_train, n_target=args.n_train)
    try:
        source, labelled_target, eval_sets = load_data(data)
    except (DataNotFoundError, FileNotFoundError) as exc:
        return skip(f"data not found: {exc}".splitlines()[0], args.out_dir, command)
    target = labelled_target.unlabelled()  # neither side sees a target label in training
    config = make_config("dann", steps=args.steps, batch_size=args.batch_size)

    start = build_network(source, target, args.seed).state_dict()
    from dannlib.methods import DANN

    ours_start = DANN(config, source, target, [args.seed]).nets[0].state_dict()
    assert all(torch.equal(start[k], ours_start[k]) for k in start), "the sides do not start from the same weights"

    def run(side: str, steps: int):
        if side == OURS:
            return train_ours(source, target, config, args.seed, steps)
        return train_peer(pa, source, target, config, args.seed, steps, channels_last=side.endswith("channels_last"))

    for side in sides:  # warm-up: oneDNN primitives, allocator
        run(side, args.warmup)
    results = {}
    for side in sides:
        load_before = os.getloadavg()[0]
        (net, counted), wall, cpu = timed(lambda: run(side, args.steps))
        if counted != args.steps:
            raise RuntimeError(f"{side}: {counted} optimiser steps counted, {args.steps} asked for")
        net.eval()
        accs = {f"{name}_acc": float(accuracy(net, d.x, d.y)) for name, d in eval_sets.items()}
        results[side] = {"wall_s": wall, "cpu_s": cpu, **rates(args.steps, wall, cpu), **accs,
                         "load_average_1min": [load_before, os.getloadavg()[0]]}
        print(f"{side}: {results[side]['steps_per_s']:.1f} steps/s (wall), {results[side]['steps_per_cpu_s']:.1f} "
              f"steps/CPU s; target test {accs['target_test_acc']:.4f}, source test {accs['source_test_acc']:.4f}",
              flush=True)
    versions = {"torch": torch.__version__, **{name: getattr(__import__(mod), "__version__", "?") for name, mod in
                                               [("pytorch-adapt", "pytorch_adapt"), ("torchmetrics", "torchmetrics"),
                                                ("pytorch-metric-learning", "pytorch_metric_learning")]}}
    record = {
        "benchmark": "pytorch-adapt's DANN beside dannlib's", "status": "ok",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "command": command,
        "machine": {**machine_info("cpu"), "torch_threads": threads},
        "versions": versions, "pinned": pinned(),
        "settings": {"steps": args.steps, "seed": args.seed, "batch_size": args.batch_size, "n_train": args.n_train,
                     "warmup": args.warmup, "source": "mnist", "target": "mnist_m_released", "data": data,
                     "eval": "full MNIST-M (released) and MNIST test sets, after the last step; not timed",
                     "recipe": "SGD momentum 0.9, eq. 7 learning rate from 0.01, eq. 6 lambda; "
                               "objective L_y + L_d on every side"},
        "sides": results, "ratios": ratios(results),
    }
    write_outputs(record, args.out_dir)
    for name, q in record["ratios"].items():
        print(f"dannlib / {name}: {q['wall']:.2f} (wall), {q['cpu']:.2f} (CPU)")
    print(f"wrote {args.out_dir / OUT_NAMES['table']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
