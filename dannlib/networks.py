"""Networks, named in the papers' terms: ``feature_extractor`` (G_f), ``label_predictor`` (G_y),
``domain_classifier`` (G_d). The domain classifier ends in ONE logit (probability of "target",
d = 1) trained with binary cross-entropy on the logit: a softmax over one logit would be constant.
"""
from __future__ import annotations

import torch
from torch import nn

from .grl import grad_reverse


class DANNNet(nn.Module):
    """G_f -> G_y for labels, G_f -> R_lambda -> G_d for domains (DANN, eq. 1/5). ``forward(x)``:
    class logits ``(N, n_classes)``; ``forward(x, grl_lambda)``: ``(class_logits, domain_logits (N,))``.
    ``input_mean`` (one input's shape, e.g. ``(C, H, W)``): a fixed buffer subtracted from inputs."""

    def __init__(self, feature_extractor: nn.Module, label_predictor: nn.Module, domain_classifier: nn.Module,
                 input_mean: torch.Tensor | None = None):
        super().__init__()
        self.feature_extractor = feature_extractor
        self.label_predictor = label_predictor
        self.domain_classifier = domain_classifier
        self.register_buffer("input_mean", None if input_mean is None else input_mean.detach().clone().float())

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.feature_extractor(x if self.input_mean is None else x - self.input_mean)

    def forward(self, x: torch.Tensor, grl_lambda: float | None = None):
        f = self.features(x)
        class_logits = self.label_predictor(f)
        if grl_lambda is None:
            return class_logits
        return class_logits, self.domain_classifier(grad_reverse(f, grl_lambda)).squeeze(-1)


def _mlp(sizes: list[int]) -> nn.Sequential:
    """Linear layers ``sizes[0] -> sizes[1] -> ...`` with a ReLU after each but the last."""
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def toy_net(in_features: int = 2, hidden: int = 8, n_classes: int = 2, deep_domain_classifier: bool = False) -> DANNNet:
    """Seed 003's toy network: G_f in -> hidden (ReLU), G_y hidden -> n_classes, G_d hidden ->
    hidden -> 1, or, ``deep_domain_classifier``, hidden -> 32 -> 32 -> 1."""
    domain_sizes = [hidden, 32, 32, 1] if deep_domain_classifier else [hidden, hidden, 1]
    return DANNNet(nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU()), nn.Linear(hidden, n_classes),
                   _mlp(domain_sizes))


def _conv_side(size: int) -> int:
    """Side of the maps after two 5x5 valid convolutions, each followed by a max-pool 2."""
    return ((size - 4) // 2 - 4) // 2


class DigitsFeatureExtractor(nn.Sequential):
    """REFERENCE §1's MNIST -> MNIST-M feature extractor: conv 5x5x32 -> ReLU -> max-pool 2 ->
    conv 5x5x48 -> ReLU -> max-pool 2 -> flatten, computed as conv -> max-pool -> ReLU: the same numbers
    forward and backward (ReLU is monotone and the 2x2 windows do not overlap), with the ReLU on a quarter
    of the elements (benchmarks/README.md). ``(N, C, S, S)`` -> ``(N, 48 * s * s)``,
    ``s = ((S - 4) // 2 - 4) // 2`` (768 features at S = 28). Options of the speedrun's candidates (not
    the paper's): ``instance_norm`` standardises each image per channel first (as VADA's network does,
    Shu et al. 2018); ``batch_norm`` follows each convolution with batch normalisation."""

    def __init__(self, in_channels: int = 3, instance_norm: bool = False, batch_norm: bool = False):
        def norm(c):
            return [nn.BatchNorm2d(c)] if batch_norm else []
        super().__init__(*([nn.InstanceNorm2d(in_channels)] if instance_norm else []),
                         nn.Conv2d(in_channels, 32, 5), *norm(32), nn.MaxPool2d(2), nn.ReLU(),
                         nn.Conv2d(32, 48, 5), *norm(48), nn.MaxPool2d(2), nn.ReLU(), nn.Flatten())

    @staticmethod
    def out_features(size: int) -> int:
        if _conv_side(size) < 1:
            raise ValueError(f"image size {size} is too small for the digits network (needs >= 16)")
        return 48 * _conv_side(size) ** 2


def digits_net(in_channels: int = 3, size: int = 28, n_classes: int = 10, input_mean: torch.Tensor | None = None,
               instance_norm: bool = False, batch_norm: bool = False) -> DANNNet:
    """The DANN digits network (REFERENCE §1): features (768 at 28x28) -> fc 100 -> fc 100 ->
    n_classes for labels; features -> fc 100 -> 1 logit for domains."""
    n = DigitsFeatureExtractor.out_features(size)
    return DANNNet(DigitsFeatureExtractor(in_channels, instance_norm, batch_norm), _mlp([n, 100, 100, n_classes]),
                   _mlp([n, 100, 1]), input_mean=input_mean)


class LeNetEncoder(nn.Sequential):
    """ADDA's LeNet encoder (Tzeng et al. 2017): conv 5x5x20 -> max-pool 2 -> ReLU -> conv 5x5x50
    -> dropout -> max-pool 2 -> ReLU -> flatten -> fc 500 -> ReLU; ``(N, C, 28, 28)`` ->
    ``(N, 500)``. Its dropout is off (p = 0): runs are deterministic under a seed."""

    def __init__(self, in_channels: int = 1, size: int = 28):
        super().__init__(nn.Conv2d(in_channels, 20, 5), nn.MaxPool2d(2), nn.ReLU(),
                         nn.Conv2d(20, 50, 5), nn.Dropout2d(0.0), nn.MaxPool2d(2), nn.ReLU(),
                         nn.Flatten(), nn.Linear(50 * _conv_side(size) ** 2, 500), nn.ReLU())


def adda_discriminator(in_features: int = 500, hidden: int = 500) -> nn.Sequential:
    """ADDA's discriminator: 500 -> 500 -> 500 -> 1 logit with ReLU (1 logit = P(source))."""
    return _mlp([in_features, hidden, hidden, 1])


class GaussianNoise(nn.Module):
    """Adds N(0, 1) noise in training mode only (VADA's small network after each pooling)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.randn_like(x) if self.training else x


def _vada_block(in_channels: int) -> list[nn.Module]:
    return [m for i in range(3) for m in (nn.Conv2d(in_channels if i == 0 else 64, 64, 3, padding=1),
                                          nn.BatchNorm2d(64), nn.LeakyReLU(0.1))]


def vada_small_net(in_channels: int = 3, size: int = 28, n_classes: int = 10) -> DANNNet:
    """VADA/DIRT-T's small digits network (Shu et al. 2018) as its authors' code builds it
    (docs/protocol.md, section 4): instance-normalised input, three blocks of three 3x3 convolutions
    (64 channels, batch norm, leaky ReLU 0.1); the first two end in max-pool 2, dropout 0.5 and
    Gaussian noise (std 1), the third in global average pooling and a dense layer to the classes.
    G_d reads the second block's output (the code's ``--trim 5``): dense 100, ReLU, one logit."""
    features = nn.Sequential(nn.InstanceNorm2d(in_channels),
                             *_vada_block(in_channels), nn.MaxPool2d(2), nn.Dropout(0.5), GaussianNoise(),
                             *_vada_block(64), nn.MaxPool2d(2), nn.Dropout(0.5), GaussianNoise())
    classifier = nn.Sequential(*_vada_block(64), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, n_classes))
    return DANNNet(features, classifier, nn.Sequential(nn.Flatten(), _mlp([64 * (size // 4) ** 2, 100, 1])))
