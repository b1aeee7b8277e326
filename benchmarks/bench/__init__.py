"""``python -m benchmarks.bench``: training throughput of the digits networks, several ways,
measured in ONE run so that they can be compared as ratios on a shared, noisy machine.

Throughput (``python -m benchmarks.bench [options]``):

- (a) ``dataloader``: the usual peer-style pipeline, written here only as the baseline: a
  per-sample ``torch.utils.data.Dataset`` (uint8 image -> PIL -> ``to_tensor`` -> mean
  subtraction, as torchvision's MNIST + ``ToTensor`` does), two ``DataLoader`` s (source,
  target; ``num_workers=2``, ``shuffle=True``, batch 32 each) zipped, and a hand-written
  DANN step with the same network (:func:`dannlib.networks.digits_net`), optimiser (SGD,
  momentum 0.9, eq. 7's rate) and gradient reversal (eq. 6's lambda).
- (b) ``fit``: dannlib's default loop, :func:`dannlib.training.fit` with
  :class:`dannlib.methods.DANN` for one seed (eager; batches gathered by index from
  tensors already on the device).
- (c) ``fit_separate``: dannlib's multi-seed mode, for K seeds: K single-seed ``fit`` s one
  after another (the code path of (b), so its seed-steps/s *is* (b)'s, not measured twice).
- ``fit_contiguous``: (b) with ``DANNConfig(channels_last=False)``, to show what the
  channels_last convolution weights (DANN's default on the CPU) gain; with IIMT timed,
  ``iimt_contiguous`` does the same for IIMT (fp32).
- ``--precision fp32,bf16`` (the default): every timed method also in bfloat16 autocast
  (``TrainConfig.precision="bf16"``), e.g. ``fit_bf16``; ``--methods dann,iimt,adda_gan``
  adds IIMT's step and ADDA's stage 2 (LeNet, batch 128, one channel) in each precision.
  ``bf16_conv`` (DANN, IIMT; an experiment of this benchmark, not a dannlib setting):
  only the convolutional feature extractor under bf16 autocast, the fc layers and the
  losses in float32.

The data are synthetic random images (``(N, C, 28, 28)`` in [0, 1], random labels): the
throughput of a step does not depend on the pixel values, and no data set is needed.

Each variant is built and warmed up once; then ``--repeats`` rounds each time ``--steps``
steps of every variant in turn (a b c a b c ...), and the medians are reported. The
optimiser steps each variant performs are counted (a hook on its optimiser), and a round
that did not perform exactly ``--steps`` steps is an error. Throughput: steps/s (optimiser
steps), seed-steps/s (steps x seeds trained by one step; the unit that compares one seed
with K seeds) and images/s (seed-steps x 2 x batch). With ``--threads 1,2`` every round
also cycles through the thread counts. Threads are set through
:func:`dannlib.utils.configure_threads` (default: its policy) and restored afterwards.

Accuracy of bf16 (``python -m benchmarks.bench accuracy [options]``): DANN on MNIST ->
MNIST-M trained in each precision for the same steps and seeds; the target test accuracy
of every run goes to ``results/bench/precision-accuracy.json``.

Processes against threads for a sweep (``python -m benchmarks.bench sweep [--runs 4] [--steps 400]
[--repeats 3] [--cores 2] [--data digits|toy]``): the same K short DANN runs (MNIST -> MNIST-M,
``--n-train`` 2000 images per domain, ``--n-test`` 500, batch 32, seeds 0..K-1) trained by
:func:`dannlib.sweep.ensure` three ways, each into a fresh temporary store, interleaved round by
round (the order rotates): (a) ``processes``, ``workers=cores`` (one torch thread each, the
sweep's default); (b) ``threads``, ``workers=1`` after ``configure_threads(cores)``; (c)
``serial``, ``workers=1`` at one thread. A round times the whole ``ensure`` call (worker start-up
and data loading included; the data caches are cleared first) and checks that the store ends
with exactly the K runs asked for. Reported: runs/minute (median over rounds; also "in-run",
from ``fit``'s own timer, without the once-per-worker start-up), the ratios a/b, a/c, b/c, the
load averages and the command, in ``results/bench/bench-sweep-<data>.json``.

Besides wall-clock seconds every round records the process's CPU seconds
(``time.process_time``): with one intra-op thread, CPU time does not count the time the
process waits for a core held by other users, so its ratios are steadier on a shared
machine (it does not count DataLoader worker processes: compare the baseline on wall time).
"""
from __future__ import annotations

from . import accuracy, steps, sweeps, variants  # noqa: F401  (variants: the timed variants, for the tests)


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.bench [accuracy|sweep] ...``: the step benchmark, or one of the
    other modes."""
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["accuracy"]:
        return accuracy.accuracy_main(argv[1:])
    if argv[:1] == ["sweep"]:
        return sweeps.sweep_main(argv[1:])
    return steps.steps_main(argv)
