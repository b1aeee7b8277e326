"""The one training loop (dannlib.training.fit): how it samples (seed s: source batches from a
generator seeded 2s, target from 2s + 1; shuffled epochs without repeats), the path for
methods that use no target, one RunResult per seed with that seed's history only, and the
trained networks handed back in RunResult.modules."""
from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from dannlib import methods, networks, toys
from dannlib.domain import IndexSampler
from dannlib.methods.adda import ADDAConfig, SourcePretrain
from dannlib.methods.common import NETWORKS
from dannlib.networks import digits_net
from dannlib.training import Domain, Method, accuracy, fit
from dannlib.utils import seeded

NS, NT, B = 10, 7, 3  # 3 source batches an epoch (1 image dropped), 2 target batches (1 dropped)


def _indexed_domains():
    """x[i, 0] = i (source) or 1000 + i (target): a batch's rows name the samples drawn."""
    xs = torch.stack([torch.arange(NS, dtype=torch.float32), torch.zeros(NS)], 1)
    ys = torch.arange(NS) % 2
    xt = torch.stack([1000 + torch.arange(NT, dtype=torch.float32), torch.zeros(NT)], 1)
    return Domain("s", xs, ys), Domain("t", xt, torch.arange(NT) % 2)


class _Recorder(Method):
    """Records the batches and progress it is given; its loss for seed s is s."""

    def __init__(self, seeds, uses_target=True):
        self.seeds, self.name, self.uses_target, self.calls = list(seeds), "recorder", uses_target, []
        self.nets = []
        for s in self.seeds:
            with seeded(s):
                self.nets.append(nn.Linear(2, 2))

    def step(self, xs, ys, xt, p):
        self.calls.append((xs.clone(), ys.clone(), None if xt is None else xt.clone(), p))
        loss = torch.tensor([float(s) for s in self.seeds])
        return {"loss": loss if self.batched else loss[0]}

    def predict(self, x):
        out = torch.stack([n(x) for n in self.nets])
        return out if self.batched else out[0]

    def modules(self, i):
        return {"net": self.nets[i]}


def _hand_indices(n, batch, seed, count):
    """Shuffled epochs by hand: torch.randperm from a generator seeded ``seed``, ``n // batch``
    batches an epoch, the remainder dropped, a fresh permutation each epoch."""
    g = torch.Generator().manual_seed(seed)
    out = []
    while len(out) < count:
        perm = torch.randperm(n, generator=g)
        out += [perm[j * batch:(j + 1) * batch] for j in range(n // batch)]
    return out[:count]


STEPS = 8


@pytest.mark.parametrize("seed", [0, 4])
def test_single_seed_draws_source_from_2s_and_target_from_2s_plus_1(seed):
    src, tgt = _indexed_domains()
    m = _Recorder([seed])
    fit(m, src, tgt, steps=STEPS, batch_size=B, progress=False)
    assert len(m.calls) == STEPS
    hs, ht = _hand_indices(NS, B, 2 * seed, STEPS), _hand_indices(NT, B, 2 * seed + 1, STEPS)
    sampler_s, sampler_t = IndexSampler(NS, B, 2 * seed, "cpu"), IndexSampler(NT, B, 2 * seed + 1, "cpu")
    for step, (xs, ys, xt, p) in enumerate(m.calls):
        assert xs.shape == (B, 2) and xt.shape == (B, 2)
        assert xs[:, 0].long().tolist() == hs[step].tolist() == sampler_s.next().tolist()
        assert ys.tolist() == (hs[step] % 2).tolist()  # labels travel with their images
        assert (xt[:, 0].long() - 1000).tolist() == ht[step].tolist() == sampler_t.next().tolist()
        assert p == step / STEPS


def test_each_epoch_is_a_permutation_without_repeats():
    src, tgt = _indexed_domains()
    m = _Recorder([1])
    fit(m, src, tgt, steps=12, batch_size=B, progress=False)
    src_idx = [int(v) for xs, _, _, _ in m.calls for v in xs[:, 0]]
    tgt_idx = [int(v) - 1000 for _, _, xt, _ in m.calls for v in xt[:, 0]]
    for idx, n in ((src_idx, NS), (tgt_idx, NT)):
        per_epoch = (n // B) * B
        epochs = [idx[i:i + per_epoch] for i in range(0, len(idx), per_epoch)]
        assert len(epochs) >= 4
        for e in epochs:
            assert len(set(e)) == len(e), f"an index repeats within an epoch: {e}"
            assert set(e) <= set(range(n))
        assert len({tuple(e) for e in epochs if len(e) == per_epoch}) > 1  # reshuffled every epoch


def test_several_seeds_each_draw_their_own_batches():
    src, tgt = _indexed_domains()
    m = _Recorder([3, 5])
    results = fit(m, src, tgt, steps=STEPS, batch_size=B, eval_every=2, eval_sets={"t": tgt}, progress=False)
    for k, seed in enumerate([3, 5]):
        hs, ht = _hand_indices(NS, B, 2 * seed, STEPS), _hand_indices(NT, B, 2 * seed + 1, STEPS)
        for step, (xs, ys, xt, _) in enumerate(m.calls):
            assert xs.shape == (2, B, 2) and ys.shape == (2, B) and xt.shape == (2, B, 2)
            assert xs[k, :, 0].long().tolist() == hs[step].tolist()
            assert (xt[k, :, 0].long() - 1000).tolist() == ht[step].tolist()
    # one RunResult per seed, each with that seed's history only
    assert [r.seed for r in results] == [3, 5] and all(r.method == "recorder" for r in results)
    for r in results:
        assert [h["step"] for h in r.history] == [2, 4, 6, 8]
        assert all(h["seed"] == r.seed and h["loss"] == r.seed for h in r.history)
        assert r.final["seed"] == r.seed and r.final["status"] == "ok" and r.steps == STEPS
        assert r.modules["net"] is m.nets[[3, 5].index(r.seed)]
        assert r.final["t_acc"] == pytest.approx(accuracy(r.modules["net"], tgt.x, tgt.y).item())
        assert [h["p"] for h in r.history] == [0.25, 0.5, 0.75, 1.0]


def test_method_without_target_samples_none_and_accepts_no_target():
    src, tgt = _indexed_domains()
    m = _Recorder([2], uses_target=False)
    (r,) = fit(m, src, None, steps=5, batch_size=B, progress=False)
    assert all(xt is None for _, _, xt, _ in m.calls)
    hs = _hand_indices(NS, B, 4, 5)  # the source draws are the same as with a target
    assert [xs[:, 0].long().tolist() for xs, _, _, _ in m.calls] == [h.tolist() for h in hs]
    assert r.seed == 2 and r.status == "ok"
    # a target handed to a method that uses none is neither sampled nor checked
    m2 = _Recorder([2], uses_target=False)
    fit(m2, src, Domain("odd", torch.zeros(4, 5)), steps=2, batch_size=B, progress=False)
    assert all(xt is None for _, _, xt, _ in m2.calls)
    with pytest.raises(ValueError, match="needs a target"):
        fit(_Recorder([2]), src, None, steps=2, batch_size=B, progress=False)


def test_per_seed_method_several_seeds_equal_single_seed_runs():
    """PerSeedMethod's loop over seeds inside one fit (SourcePretrain, seeds 0 and 1) equals
    separate single-seed fits."""
    g = torch.Generator().manual_seed(0)
    src = Domain("s", torch.rand(40, 1, 16, 16, generator=g), torch.arange(40) % 10)
    cfg = ADDAConfig(pretrain_steps=4, batch_size=8)
    both = fit(SourcePretrain(cfg, src, None, [0, 1]), src, None, steps=4, batch_size=8, eval_every=2,
               eval_sets={"s": src}, progress=False)
    for i, seed in enumerate([0, 1]):
        (alone,) = fit(SourcePretrain(cfg, src, None, [seed]), src, None, steps=4, batch_size=8, eval_every=2,
                       eval_sets={"s": src}, progress=False)
        assert both[i].seed == seed and both[i].final["s_acc"] == alone.final["s_acc"]
        assert [h["label_loss"] for h in both[i].history] == pytest.approx([h["label_loss"] for h in alone.history],
                                                                           rel=1e-6)
        for name in ("encoder", "classifier"):
            for a, b in zip(both[i].modules[name].parameters(), alone.modules[name].parameters()):
                torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


# -- RunResult.modules: the trained networks ----------------------------------------------
def _toy_domains():
    pr = toys.make_blobs_shift(n=80, seed=0)
    return (Domain("s", torch.tensor(pr.xs), torch.tensor(pr.ys)),
            Domain("t", torch.tensor(pr.xt), torch.tensor(pr.yt)))


def _round_trip(net, fresh):
    buf = io.BytesIO()
    torch.save(net.state_dict(), buf)
    buf.seek(0)
    fresh.load_state_dict(torch.load(buf))
    return fresh.eval()


def test_modules_are_the_trained_networks():
    s, t = _toy_domains()
    results = methods.train("dann", s, t, seeds=[0, 1], network="toy", steps=30, batch_size=16, lr=0.05,
                            eval_sets={"target": t, "source": s}, progress=False)
    assert [r.seed for r in results] == [0, 1]
    for r in results:
        net = r.modules["net"].eval()
        # the final accuracies fit reported are those of the network handed back
        assert r.final["target_acc"] == pytest.approx(accuracy(net, t.x, t.y).item())
        assert r.final["source_acc"] == pytest.approx(accuracy(net, s.x, s.y).item())
        with seeded(99):
            fresh = NETWORKS["toy"](s, t)
        with torch.no_grad():
            assert not torch.equal(fresh(t.x), net(t.x))
            loaded = _round_trip(net, fresh)
            assert torch.equal(loaded(t.x), net(t.x))
    assert not torch.equal(results[0].modules["net"](t.x), results[1].modules["net"](t.x))


def test_digits_and_adda_modules_round_trip():
    g = torch.Generator().manual_seed(1)
    s = Domain("s", torch.rand(24, 3, 16, 16, generator=g), torch.arange(24) % 10)
    t = Domain("t", torch.rand(24, 3, 16, 16, generator=g), torch.arange(24) % 10)
    (r,) = methods.train("dann", s, t, seeds=[0], steps=2, batch_size=8, eval_sets={"t": t}, progress=False)
    net = r.modules["net"].eval()
    # the fresh builder the saved weights go into (as records.load_models does): a zero input
    # mean, a buffer that the load overwrites with the trained one (both domains' pixel mean)
    fresh = digits_net(in_channels=3, size=16, n_classes=10, input_mean=torch.zeros(3, 16, 16))
    with torch.no_grad():
        loaded = _round_trip(net, fresh)
        torch.testing.assert_close(loaded.input_mean, torch.cat([s.x, t.x]).mean(0))
        torch.testing.assert_close(loaded(t.x), net(t.x), rtol=1e-5, atol=1e-6)  # channels_last vs contiguous
        assert accuracy(loaded, t.x, t.y).item() == pytest.approx(r.final["t_acc"])
    (a,) = methods.train("adda_gan", s, t, seeds=[0], pretrain_steps=2, steps=2, batch_size=8,
                         eval_sets={"t": t}, progress=False)
    enc = _round_trip(a.modules["encoder"], networks.LeNetEncoder(in_channels=3, size=16))
    clf = _round_trip(a.modules["classifier"], nn.Linear(500, 10))
    with torch.no_grad():
        predict = lambda x: a.modules["classifier"](a.modules["encoder"](x))  # noqa: E731
        torch.testing.assert_close(clf(enc(t.x)), predict(t.x), rtol=1e-5, atol=1e-6)  # channels_last vs contiguous
        assert accuracy(lambda x: clf(enc(x)), t.x, t.y).item() == pytest.approx(a.final["t_acc"])


# -- evaluation: eval mode, and the final numbers on the whole of each set -------------------
class _Fixed(Method):
    """A method that does not learn: its one network ``net`` classifies; its step returns a
    constant loss. ``modes`` records ``net.training`` at every ``predict`` call."""

    def __init__(self, net, seeds=(0,)):
        self.seeds, self.name, self.uses_target, self.net, self.modes = list(seeds), "fixed", False, net, []

    def step(self, xs, ys, xt, p):
        return {"loss": torch.tensor(0.0)}

    def predict(self, x):
        self.modes.append(self.net.training)
        return self.net(x)

    def modules(self, i):
        return {"net": self.net}


def _dropout_net():
    """``x (N, 1) -> (N, 2)`` logits ``(-x, x)`` behind a dropout (p = 0.5): in eval mode it
    classifies ``x > 0`` perfectly; in train mode the dropout zeroes about half the inputs,
    their logits tie at 0 and argmax says class 0, so about half the class-1 samples are wrong."""
    lin = nn.Linear(1, 2, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[-1.0], [1.0]]))
    return nn.Sequential(nn.Dropout(0.5), lin)


def test_evaluate_runs_the_networks_in_eval_mode_then_back_to_train_mode():
    """evaluate() measures the network as it will be used (dropout off): the accuracy is the
    eval-mode one, 1.0 here, where a train-mode pass scores about 0.75. Called inside the loop,
    it hands the networks back in train mode for the next step; fit leaves them in eval mode."""
    from dannlib.training import evaluate

    x = torch.linspace(-1, 1, 400).unsqueeze(1) + 1e-3  # no x == 0
    d = Domain("d", x, (x[:, 0] > 0).long())
    net = _dropout_net()
    with seeded(0):  # the dropout masks
        train_acc = accuracy(net.train(), x, d.y).item()
    assert train_acc < 0.9  # the test has power: a train-mode evaluation scores lower
    m = _Fixed(net)
    with seeded(0):
        accs = evaluate(m, {"t": d})
    assert accs == {"t_acc": [1.0]}
    assert m.modes and not any(m.modes)  # every prediction in eval mode
    assert net.training and all(mod.training for mod in net.modules())  # back in train mode after
    m2 = _Fixed(_dropout_net())
    with seeded(0):
        (r,) = fit(m2, d, None, steps=4, batch_size=8, eval_every=2, eval_sets={"t": d}, progress=False)
    assert r.final["t_acc"] == 1.0 and [h["t_acc"] for h in r.history] == [1.0, 1.0]
    assert m2.modes and not any(m2.modes)
    assert not r.modules["net"].training  # fit hands the trained network back in eval mode


def test_final_evaluation_uses_the_whole_test_set_and_monitoring_its_first_monitor_size():
    """The monitoring records score the first ``monitor_size`` samples of each set; ``final``
    (the numbers reported) scores all of them. A classifier that always says class 0, on a test
    set whose first 50 samples are class 0 and whose other 150 are class 1: 1.0 on the
    monitoring subset, 50 / 200 = 0.25 on the whole set."""
    x = torch.randn(200, 1)
    y = torch.cat([torch.zeros(50), torch.ones(150)]).long()
    test = Domain("test", x, y)
    always_0 = nn.Linear(1, 2)
    with torch.no_grad():
        always_0.weight.zero_()
        always_0.bias.copy_(torch.tensor([1.0, 0.0]))
    src = Domain("s", torch.randn(16, 1), torch.arange(16) % 2)
    (r,) = fit(_Fixed(always_0), src, None, steps=4, batch_size=4, eval_every=2, eval_sets={"test": test},
               monitor_size=50, progress=False)
    assert [h["test_acc"] for h in r.history] == [1.0, 1.0]  # the first monitor_size samples
    assert r.final["test_acc"] == 0.25  # every sample of the set
    assert r.final["test_acc"] == accuracy(always_0, test.x, test.y).item()


def test_the_loop_owns_the_recipe():
    """fit (Method.update) sets every optimiser's learning rate from config.lr_at, enters bf16 autocast
    per config.precision, and the base puts the networks in channels_last once built: a method's step
    does none of it."""
    from dannlib.methods import make_config
    from dannlib.methods.cdan import CDAN

    g = torch.Generator().manual_seed(0)
    d = Domain("d", torch.rand(16, 3, 28, 28, generator=g), torch.randint(0, 10, (16,), generator=g))
    cfg = make_config("cdan", steps=2, batch_size=4, precision="bf16", channels_last=True)
    m = CDAN(cfg, d, d, [0, 1])
    convs = [p for net in m.nets for p in net.parameters() if p.ndim == 4]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    seen = []
    step = m.step_one
    m.step_one = lambda *a: seen.append(torch.is_autocast_enabled("cpu")) or step(*a)
    m.update(d.x[:8].reshape(2, 4, 3, 28, 28), d.y[:8].reshape(2, 4), d.x[8:].reshape(2, 4, 3, 28, 28), 0.5)
    assert seen == [True, True]
    assert [o.param_groups[0]["lr"] for o in m.optimizers] == [cfg.lr_at(0.5)] * 2


def test_training_does_not_depend_on_the_callers_global_generator():
    """VADA's network draws dropout masks and noise from torch's global generator while training:
    ``fit`` seeds it from the run's seed, so the same seed gives the same weights whatever state the
    caller left it in, and the caller's state is restored afterwards."""
    from synthetic import bars

    xs, ys = bars(32, 0)
    xt, yt = bars(32, 1, 0.3)
    source = Domain("s3", xs.repeat(1, 3, 1, 1), ys)
    target = Domain("t3", xt.repeat(1, 3, 1, 1) * 0.8, yt)

    def weights(global_seed):
        torch.manual_seed(global_seed)
        run, = methods.train("dann", source, target, steps=3, batch_size=8, network="vada_small", progress=False)
        after = torch.rand(1)
        torch.manual_seed(global_seed)
        assert torch.equal(after, torch.rand(1)), "fit left the caller's global generator advanced"
        return {k: v.clone() for k, v in run.modules["net"].state_dict().items()}

    first, second = weights(1), weights(2)
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)


class _Counter(Method):
    """A method whose step t logs loss = t: the history shows how ``fit`` pools a logging window."""

    def __init__(self):
        self.seeds, self.name, self.uses_target, self.t = [0], "counter", False, 0
        self.net = nn.Linear(2, 2)

    def step(self, xs, ys, xt, p):
        self.t += 1
        return {"loss": torch.tensor(float(self.t))}

    def predict(self, x):
        return self.net(x)

    def modules(self, i):
        return {"net": self.net}


def test_a_logged_value_is_the_mean_over_its_window():
    d = Domain("d", torch.randn(16, 2), torch.arange(16) % 2)
    (r,) = fit(_Counter(), d, None, steps=10, batch_size=4, eval_every=3, progress=False)
    # windows of steps 1-3, 4-6, 7-9, then the last step alone: means 2, 5, 8, 10 (the last value would be 3, 6, 9, 10)
    assert [h["loss"] for h in r.history] == [2.0, 5.0, 8.0, 10.0]


def test_fit_hands_the_batches_an_unlabelled_target(monkeypatch):
    """Target labels never enter the training batches, even when the caller passes a labelled target: only
    ``eval_sets`` read them."""
    from dannlib import training
    seen, real = [], training.Batches

    def spy(source, target, *args, **kwargs):
        seen.append(target)
        return real(source, target, *args, **kwargs)

    monkeypatch.setattr(training, "Batches", spy)
    src, tgt = _indexed_domains()
    assert tgt.y is not None
    fit(_Recorder([0]), src, tgt, steps=2, batch_size=B, progress=False)
    assert len(seen) == 1 and seen[0].y is None and torch.equal(seen[0].x, tgt.x)
