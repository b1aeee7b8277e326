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



def _shapes(module: nn.Module) -> list[tuple]:
    return [tuple(p.shape) for p in module.parameters()]


def test_the_papers_architectures_parameter_by_parameter():
    """The shapes written out by hand from the papers (not from dannlib): DANN's MNIST network (Ganin et al. 2016,
    fig. 4a: conv 5x5x32 -> pool -> conv 5x5x48 -> pool -> fc 100 -> fc 100 -> 10; domain head fc 100 -> 1) on
    28 px RGB, whose features are 48 x 4 x 4 = 768; ADDA's LeNet encoder (conv 5x5x20 -> pool -> conv 5x5x50 ->
    pool -> fc 500; 50 x 4 x 4 = 800 features) and its discriminator 500 -> 500 -> 500 -> 1 (Tzeng et al. 2017)."""
    from dannlib.networks import LeNetEncoder, adda_discriminator, digits_net

    net = digits_net(3, 28)
    assert _shapes(net.feature_extractor) == [(32, 3, 5, 5), (32,), (48, 32, 5, 5), (48,)]
    assert _shapes(net.label_predictor) == [(100, 768), (100,), (100, 100), (100,), (10, 100), (10,)]
    assert _shapes(net.domain_classifier) == [(100, 768), (100,), (1, 100), (1,)]
    assert _shapes(LeNetEncoder(1, 28)) == [(20, 1, 5, 5), (20,), (50, 20, 5, 5), (50,), (500, 800), (500,)]
    assert _shapes(adda_discriminator()) == [(500, 500), (500,), (500, 500), (500,), (1, 500), (1,)]
