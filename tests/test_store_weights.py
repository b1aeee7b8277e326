"""A stored run is usable only when its record and its weights load (issue 24): a truncated
``.pt`` beside a good record is warned about and recomputed, like a damaged record, both for
a notebook's fetch and for ADDA's pre-training that a stage-2 run starts from."""
from __future__ import annotations

import pytest

from dann_study.plan import fetch
from dannlib.store import RunSpec, Store
from dannlib.sweep import ensure
from synthetic import tiny_adda  # tests/synthetic.py


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_a_notebook_fetch_recomputes_a_run_whose_weights_are_damaged(tmp_path):
    store = Store(tmp_path / "store")
    _, runs = fetch("01", "smoke", seeds=[0], store=store, workers=1, train_missing=True, progress=False)
    _, victim = runs[0]
    assert victim.weights_path.is_file()
    _truncate(victim.weights_path)
    with pytest.warns(UserWarning, match=r"its weights .*\.pt do not load .*it will be recomputed"):
        _, again = fetch("01", "smoke", seeds=[0], store=store, workers=1, train_missing=True, progress=False)
    summary = ensure.last_summary
    assert summary.trained == 1 and summary.failed == [] and len(again) == len(runs)
    rerun = dict((r.spec, r) for _, r in again)[victim.spec]
    rerun.load_modules()  # loads now
    same = lambda final: {k: v for k, v in final.items() if k not in ("seconds", "wall_seconds")}  # noqa: E731
    assert same(rerun.final) == same(victim.final)  # same seed, same numbers


def test_adda_recomputes_a_damaged_pretraining_before_its_dependant(tmp_path, monkeypatch):
    calls, data, common = tiny_adda(monkeypatch)
    gan = RunSpec.make("adda_gan", data, 0, **common)
    (pre,) = gan.dependencies()
    store = Store(tmp_path)
    ensure([gan], store=store, workers=1, progress=False)
    first = store.get(pre)
    _truncate(first.weights_path)

    calls.clear()
    minimax = RunSpec.make("adda_minimax", data, 0, **common)
    with pytest.warns(UserWarning, match="do not load"):
        out = ensure([gan, minimax], store=store, workers=1, progress=False)
    summary = ensure.last_summary
    assert summary.failed == [] and set(out) == {gan, minimax}, summary.failed
    assert calls == [("adda_pretrain", False), ("adda_minimax", True)], calls
    again = store.get(pre)
    assert again is not None and again.history == first.history
    assert again.load_modules()["classifier"] is not None
