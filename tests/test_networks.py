"""The digits network computes conv -> max-pool -> ReLU (a speed lever, benchmarks/levers.py): it must give exactly the
numbers of the paper's conv -> ReLU -> max-pool, forward and backward, in every variant and precision."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dannlib.networks import DigitsFeatureExtractor


def paper_order(fe: DigitsFeatureExtractor, x: torch.Tensor) -> torch.Tensor:
    """REFERENCE §1 written out with ``fe``'s layers: [instance norm] -> (conv [-> batch norm] -> ReLU -> max-pool 2)
    twice -> flatten."""
    layers = list(fe)
    if isinstance(layers[0], nn.InstanceNorm2d):
        x = layers.pop(0)(x)
    convs = [m for m in layers if isinstance(m, nn.Conv2d)]
    norms = [m for m in layers if isinstance(m, nn.BatchNorm2d)] or [nn.Identity(), nn.Identity()]
    for conv, norm in zip(convs, norms):
        x = F.max_pool2d(F.relu(norm(conv(x))), 2)
    return x.flatten(1)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("options", [{}, {"instance_norm": True}, {"instance_norm": True, "batch_norm": True}])
def test_digits_features_equal_the_paper_order(options, precision):
    torch.manual_seed(0)
    fe = DigitsFeatureExtractor(3, **options).to(memory_format=torch.channels_last)
    if not options.get("batch_norm"):  # (batch norm centres each channel: its maps have such windows anyway)
        with torch.no_grad():  # channels below zero everywhere: whole pooling windows on ReLU's flat side,
            for conv in (m for m in fe if isinstance(m, nn.Conv2d)):  # where a tie could move a gradient
                conv.bias[:4] = -1e3
    x = torch.randn(16, 3, 28, 28)
    results = []
    for forward in (fe, lambda v: paper_order(fe, v)):
        fe.zero_grad()
        xi = x.clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            out = forward(xi)
        (out.float() * torch.linspace(-1, 1, out.shape[1])).sum().backward()
        results.append([out.detach(), xi.grad, *(p.grad.clone() for p in fe.parameters())])
    assert (results[0][0] > 0).any() and (results[0][0] == 0).any()  # both sides of the ReLU are exercised
    for ours, paper in zip(*results):
        assert torch.equal(ours, paper)


def test_the_reordered_network_keeps_the_paper_layers():
    """Same parameters under the same names as the conv -> ReLU -> pool network (stored weights load)."""
    fe = DigitsFeatureExtractor(3, batch_norm=True)
    assert [type(m).__name__ for m in fe] == ["Conv2d", "BatchNorm2d", "MaxPool2d", "ReLU",
                                              "Conv2d", "BatchNorm2d", "MaxPool2d", "ReLU", "Flatten"]
    assert list(dict(fe.named_parameters())) == ["0.weight", "0.bias", "1.weight", "1.bias",
                                                 "4.weight", "4.bias", "5.weight", "5.bias"]

