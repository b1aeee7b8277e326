"""The timed variants of the step benchmark: the peer-style DataLoader baseline, dannlib's loop in each precision,
optimiser-step counting, synthetic data."""
from __future__ import annotations

import contextlib

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dannlib import methods, networks
from dannlib.grl import grad_reverse
from dannlib.methods.adda import SourcePretrain
from dannlib.methods.common import PRECISIONS
from dannlib.schedules import annealed_lr, grl_lambda
from dannlib.training import Domain, fit
from dannlib.utils import PROJECT_ROOT, check_choice, seeded

BATCH = 32          # per domain, as in DANNConfig
N_IMAGES = 2048     # synthetic images per domain
IMAGE_SHAPE = (3, 28, 28)
#: the methods whose step can be timed in each precision: name -> (batch per domain, channels)
TIMED_METHODS = {"dann": (BATCH, 3), "iimt": (BATCH, 3), "adda_gan": (128, 1)}
#: dannlib's precisions plus this benchmark's experiment (see _AutocastFeatures)
BENCH_PRECISIONS = PRECISIONS + ("bf16_conv",)
BENCH_DIR = PROJECT_ROOT / "results" / "bench"


# -- optimiser-step counting -----------------------------------------------------------------
class StepCounter:
    """Counts the ``step()`` calls of one optimiser (a post-step hook): what a variant really
    did, so that a variant that silently skips its steps cannot look fast."""

    def __init__(self, optimizer: torch.optim.Optimizer):
        self.count = 0
        optimizer.register_step_post_hook(self._hook)

    def _hook(self, *_):
        self.count += 1


# -- (a) the peer-style baseline ---------------------------------------------------------
class _ImageDataset(torch.utils.data.Dataset):
    """Per-sample access, as torchvision's digit sets: uint8 ``(N, 28, 28, 3)`` images,
    each returned as a float ``(3, 28, 28)`` tensor in [0, 1] minus the per-pixel mean."""

    def __init__(self, images: np.ndarray, labels: np.ndarray | None, mean: torch.Tensor):
        self.images, self.labels, self.mean = images, labels, mean

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i):
        from PIL import Image
        from torchvision.transforms.functional import to_tensor

        x = to_tensor(Image.fromarray(self.images[i])) - self.mean
        return (x, int(self.labels[i])) if self.labels is not None else x


class _DataLoaderBaseline:
    """The baseline DANN loop: two zipped DataLoaders, batches moved to the device, one
    eager SGD step per pair (eq. 1/5 with batch means; lambda eq. 6, learning rate eq. 7)."""

    seeds = 1

    def __init__(self, images_s, labels_s, images_t, device, seed: int, num_workers: int):
        self.device = device
        mean = torch.from_numpy(np.concatenate([images_s, images_t])).float().mean(0).permute(2, 0, 1) / 255
        g = torch.Generator().manual_seed(seed)
        kw = dict(batch_size=BATCH, shuffle=True, drop_last=True, num_workers=num_workers,
                  persistent_workers=num_workers > 0, generator=g)
        self.loader_s = torch.utils.data.DataLoader(_ImageDataset(images_s, labels_s, mean), **kw)
        self.loader_t = torch.utils.data.DataLoader(_ImageDataset(images_t, None, mean), **kw)
        with seeded(seed):
            self.net = networks.digits_net(in_channels=3, size=28).to(device)  # mean already subtracted
        self.opt = torch.optim.SGD(self.net.parameters(), lr=0.01, momentum=0.9)
        self.counter = StepCounter(self.opt)
        self._batches = iter(())

    def _next(self):
        try:
            return next(self._batches)
        except StopIteration:  # a new epoch of both loaders
            self._batches = zip(self.loader_s, self.loader_t)
            return next(self._batches)

    def step(self, xs, ys, xt, p: float) -> torch.Tensor:
        """One DANN step on ``xs (B, 3, 28, 28)``, ``ys (B,)``, ``xt (B, 3, 28, 28)``."""
        n = len(xs)
        for group in self.opt.param_groups:
            group["lr"] = annealed_lr(p)
        f = self.net.features(torch.cat([xs, xt]))
        class_logits = self.net.label_predictor(f[:n])
        domain_logits = self.net.domain_classifier(grad_reverse(f, grl_lambda(p))).squeeze(-1)
        d = torch.cat([torch.zeros(n, device=xs.device), torch.ones(len(xt), device=xs.device)])
        loss = F.cross_entropy(class_logits, ys) + F.binary_cross_entropy_with_logits(domain_logits, d)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return loss.detach()

    def run(self, steps: int) -> None:
        for step in range(steps):
            (xs, ys), xt = self._next()
            self.step(xs.to(self.device), ys.to(self.device), xt.to(self.device), step / steps)
        _sync(self.device)


# -- (b), (c) and the other methods: dannlib's loop -----------------------------------------
class _AutocastFeatures(nn.Module):
    """A network's feature extractor (the convolutions) run under bfloat16 autocast, its
    output returned in float32, so that the fc layers and losses stay in float32: the
    ``bf16_conv`` experiment."""

    def __init__(self, inner: nn.Module, device_type: str):
        super().__init__()
        self.inner, self.device_type = inner, device_type

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device_type, dtype=torch.bfloat16):
            return self.inner(x).float()


def build_method(method: str, source: Domain, target: Domain, seeds: list[int], precision: str = "fp32",
                 channels_last: bool | None = None, **overrides):
    """A registered method's object, as ``methods.train`` builds it for one group of seeds,
    in a precision of :data:`BENCH_PRECISIONS` (``bf16_conv``: DANN-family networks only).
    ADDA (stage 2) starts from an untrained :class:`SourcePretrain`; its config has no
    ``precision``, so it is returned as is and the caller applies autocast.
    ``channels_last`` goes into the method's config (every method's config has the field):
    None keeps the method's default (channels_last convolution weights on the CPU), False
    keeps the weights contiguous, True makes them channels_last on any device."""
    check_choice("precision", precision, BENCH_PRECISIONS)
    if channels_last is not None:
        overrides["channels_last"] = channels_last
    cls, _ = methods.METHODS[method]
    if cls is methods.ADDA:
        if precision == "bf16_conv":
            raise ValueError("bf16_conv applies to the digits network (DANN, IIMT), not to ADDA")
        cfg = methods.make_config(method, **overrides)
        return methods.ADDA(cfg, SourcePretrain(cfg, source, None, seeds), seeds)
    cfg = methods.make_config(method, precision="fp32" if precision == "bf16_conv" else precision, **overrides)
    m = cls(cfg, source, target.unlabelled(), seeds)
    if precision == "bf16_conv":
        for net in m.nets:
            net.feature_extractor = _AutocastFeatures(net.feature_extractor, source.x.device.type)
    return m


class _FitVariant:
    """``fit`` on a registered method built once (construction and warm-up are not timed).

    ``precision="bf16"`` sets the config's ``precision`` field; ADDA's config has none, so
    its whole ``fit`` runs under bfloat16 autocast instead (its step alone is timed here)."""

    def __init__(self, method: str, source: Domain, target: Domain, seeds: list[int], precision: str = "fp32",
                 batch_size: int = BATCH, **overrides):
        self.source, self.target, self.batch_size, self.seeds = source, target.unlabelled(), batch_size, len(seeds)
        self.method = build_method(method, source, target, seeds, precision, batch_size=batch_size, **overrides)
        self.autocast = isinstance(self.method, methods.ADDA) and precision == "bf16"
        m = self.method
        optimizer = m.opt_t[0] if isinstance(m, methods.ADDA) else getattr(m, "optimizer", None) or m.optimizers[0]
        self.counter = StepCounter(optimizer)

    def run(self, steps: int) -> None:
        device = self.source.x.device
        cast = torch.autocast(device.type, dtype=torch.bfloat16) if self.autocast else contextlib.nullcontext()
        with cast:
            fit(self.method, self.source, self.target, steps=steps, batch_size=self.batch_size, progress=False)
        _sync(device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _synthetic(device, channels: int = 3, seed: int = 0):
    """uint8 HWC arrays for the baseline and the same images as float tensors on the device."""
    rng = np.random.default_rng(seed)
    h, w = IMAGE_SHAPE[1], IMAGE_SHAPE[2]
    img_s = rng.integers(0, 256, (N_IMAGES, h, w, channels), dtype=np.uint8)
    img_t = rng.integers(0, 256, (N_IMAGES, h, w, channels), dtype=np.uint8)
    lab_s = rng.integers(0, 10, N_IMAGES)
    to_t = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2).float().div(255).contiguous().to(device)
    source = Domain("synthetic_source", to_t(img_s), torch.from_numpy(lab_s).long().to(device))
    target = Domain("synthetic_target", to_t(img_t))
    return img_s, lab_s, img_t, source, target
