"""Seeds trained together (one vmap-batched model) equal separate single-seed runs; either
way ``train`` returns one RunResult per seed."""
from __future__ import annotations

import pytest
import torch

from dannlib import methods, toys
from dannlib.training import Domain

SEEDS = [0, 1, 2]


@pytest.mark.parametrize("method", ["dann", "source_only"])
def test_together_equals_separate(method):
    pr = toys.make_blobs_shift(n=120, seed=0)
    s = Domain("s", torch.tensor(pr.xs), torch.tensor(pr.ys))
    t = Domain("t", torch.tensor(pr.xt), torch.tensor(pr.yt))
    kw = dict(seeds=SEEDS, network="toy", steps=150, batch_size=16, lr=0.05, eval_every=50,
              eval_sets={"target": t}, progress=False)
    together = methods.train(method, s, t, together=True, **kw)
    separate = methods.train(method, s, t, together=False, **kw)
    assert len(together) == len(separate) == 3
    assert [r.seed for r in together] == [r.seed for r in separate] == SEEDS
    nets_t = [r.modules["net"] for r in together]
    for i, seed in enumerate(SEEDS):
        net_s = separate[i].modules["net"]
        for (name, a), (_, b) in zip(nets_t[i].named_parameters(), net_s.named_parameters()):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-4, msg=f"seed {seed} {name}")
        # the batched model's network for this seed gives the single-seed model's logits
        with torch.no_grad():
            torch.testing.assert_close(nets_t[i](t.x), net_s(t.x), rtol=0, atol=1e-4)
        assert together[i].final["seed"] == seed
        assert together[i].final["target_acc"] == pytest.approx(separate[i].final["target_acc"], abs=1 / 120 + 1e-9)
        hist_t, hist_s = together[i].history, separate[i].history
        assert {r["seed"] for r in hist_t} == {r["seed"] for r in hist_s} == {seed}
        assert [r["step"] for r in hist_t] == [r["step"] for r in hist_s] == [50, 100, 150]
        for a, b in zip(hist_t, hist_s):
            assert a["label_loss"] == pytest.approx(b["label_loss"], abs=1e-4)
    # different seeds really are different networks
    w = [n.feature_extractor[0].weight for n in nets_t]
    assert not torch.allclose(w[0], w[1], atol=1e-3)
