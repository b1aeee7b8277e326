"""The method registry (dannlib.methods.METHODS), make_config, the ``config=`` / overrides
path of ``train``, and the import structure (the registry imports the method modules, the
loop imports none of them)."""
from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
import torch

from dannlib import methods, toys
from dannlib.methods import ADDA, DANN, IIMT, METHODS, ORACLES, DANNConfig, IIMTConfig, make_config, train
from dannlib.methods.adda import ADDAConfig, SourcePretrain
from dannlib.training import Domain, Method, PerSeedMethod
from dannlib.utils import PROJECT_ROOT


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_entry_builds_a_valid_config(name):
    cls, fixed = METHODS[name]
    assert issubclass(cls, Method) and dataclasses.is_dataclass(cls.Config)
    names = {f.name for f in dataclasses.fields(cls.Config)}
    assert set(fixed) <= names, f"{name}: fixed settings {set(fixed) - names} are not fields of {cls.Config.__name__}"
    cfg = make_config(name)
    assert type(cfg) is cls.Config
    assert cfg.validate() is cfg
    for k, v in fixed.items():
        assert getattr(cfg, k) == v, (name, k)
    # overrides go on top of the fixed settings
    assert make_config(name, steps=7).steps == 7


def test_registry_families():
    assert {name for name, (cls, _) in METHODS.items() if cls is DANN} >= {
        "source_only", "train_on_target", "domain_only", "dann", "dann_deep", "dann_adam"}
    assert METHODS["dann_adam"][1] == {"mode": "dann", "optimizer": "adam", "lr": 1e-3, "lr_schedule": "constant"}
    assert "dann_improved" not in METHODS  # renamed dann_adam
    assert all(issubclass(cls, PerSeedMethod) for cls in (ADDA, IIMT, SourcePretrain))
    assert set(ORACLES) <= set(METHODS)
    assert make_config("domain_only").mode == "domain_only" and make_config("dann_deep").network == "toy_deep"


def test_make_config_errors():
    with pytest.raises(ValueError) as e:
        make_config("adda")
    assert "method" in str(e.value) and "adda_gan" in str(e.value)
    with pytest.raises(ValueError) as e:
        make_config("adda_gan", mapping="gan")
    msg = str(e.value)
    assert "ADDAConfig" in msg and "'mapping'" in msg and "mapping_loss" in msg and "pretrain_steps" in msg


# -- train(config=..., **overrides) --------------------------------------------------------
@pytest.fixture(scope="module")
def toy():
    pr = toys.make_blobs_shift(n=40, seed=0)
    return Domain("s", torch.tensor(pr.xs), torch.tensor(pr.ys)), Domain("t", torch.tensor(pr.xt), torch.tensor(pr.yt))


def test_config_object_is_honoured(toy):
    s, t = toy
    cfg = DANNConfig(network="toy", steps=6, batch_size=4, lr=0.123, eval_every=3)
    (r,) = train("dann", s, t, config=cfg, progress=False)
    assert r.config == dataclasses.asdict(cfg)
    assert r.steps == 6 and [h["step"] for h in r.history] == [3, 6]
    assert r.history[0]["lr"] == pytest.approx(cfg.lr_at(2 / 6))
    assert cfg.steps == 6  # the caller's object is not modified by overrides either


def test_overrides_apply_on_top_of_config(toy):
    s, t = toy
    cfg = DANNConfig(network="toy", steps=6, batch_size=4, lr=0.123, eval_every=3)
    (r,) = train("dann", s, t, config=cfg, steps=4, eval_every=2, progress=False)
    assert r.config == dataclasses.asdict(dataclasses.replace(cfg, steps=4, eval_every=2))
    assert r.steps == 4 and r.config["lr"] == 0.123 and [h["step"] for h in r.history] == [2, 4]
    assert cfg.steps == 6 and cfg.eval_every == 3
    with pytest.raises(ValueError, match="batch_size"):  # overrides are validated too
        train("dann", s, t, config=cfg, batch_size=0, progress=False)


def test_wrong_config_class_names_it(toy):
    s, t = toy
    with pytest.raises(ValueError) as e:
        train("dann", s, t, config=ADDAConfig(), progress=False)
    msg = str(e.value)
    assert "DANNConfig" in msg and "ADDAConfig" in msg and "'dann'" in msg
    with pytest.raises(ValueError, match="IIMTConfig"):
        train("iimt", s, t, config=DANNConfig(), progress=False)


def test_unknown_override_lists_allowed_fields(toy):
    s, t = toy
    with pytest.raises(ValueError) as e:
        train("dann", s, t, stepz=3, progress=False)
    msg = str(e.value)
    assert "'stepz'" in msg and "DANNConfig" in msg and "steps" in msg and "batch_size" in msg


def test_unknown_override_with_config_lists_allowed_fields(toy):
    s, t = toy
    with pytest.raises(ValueError) as e:
        train("dann", s, t, config=DANNConfig(network="toy", steps=2, batch_size=4), stepz=3, progress=False)
    assert "'stepz'" in str(e.value) and "steps" in str(e.value)


def test_config_contradicting_fixed_settings_is_refused(toy):
    s, t = toy
    with pytest.raises(ValueError, match="mode"):
        train("source_only", s, t, config=DANNConfig(network="toy", steps=2, batch_size=4), progress=False)


def test_config_of_the_variant_runs_the_variant(toy):
    s, t = toy
    (r,) = train("dann_adam", s, t, config=make_config("dann_adam", network="toy", steps=2, batch_size=4),
                 progress=False)
    assert r.method == "dann_adam" and r.config["optimizer"] == "adam" and r.config["lr_schedule"] == "constant"


def test_iimt_and_adda_configs_through_train():
    g = torch.Generator().manual_seed(0)
    s = Domain("s", torch.rand(16, 3, 16, 16, generator=g), torch.arange(16) % 10)
    t = Domain("t", torch.rand(16, 3, 16, 16, generator=g))
    (r,) = train("iimt_no_intra", s, t, config=make_config("iimt_no_intra", steps=2, batch_size=4, K=3),
                 progress=False)
    assert r.config["K"] == 3 and r.config["intra_source"] is False and isinstance(make_config("iimt"), IIMTConfig)
    (a,) = train("adda_minimax", s, t, config=make_config("adda_minimax", pretrain_steps=2, steps=2, batch_size=4),
                 progress=False)
    assert a.config["mapping_loss"] == "minimax" and a.parts["pretrain"].steps == 2


# -- import structure ----------------------------------------------------------------------
@pytest.mark.parametrize("module", ["dannlib.methods.dann", "dannlib.methods.adda", "dannlib.methods.iimt",
                                    "dannlib.methods.common", "dannlib.methods", "dannlib.training"])
def test_each_module_imports_alone(module):
    """No import cycle: each module imports first in a fresh interpreter."""
    code = f"import {module}"
    out = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_training_does_not_import_the_methods():
    code = ("import sys, dannlib.training; "
            "bad = sorted(m for m in sys.modules if m.startswith('dannlib.methods')); "
            "print(bad); sys.exit(1 if bad else 0)")
    out = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True)
    assert out.returncode == 0, f"dannlib.training imports {out.stdout.strip()} {out.stderr}"


def test_old_modules_are_gone():
    import importlib.util

    for old in ("dannlib.adda", "dannlib.iimt"):
        assert importlib.util.find_spec(old) is None, old
    assert not (PROJECT_ROOT / "dannlib" / "methods.py").exists()
    assert methods.__file__.endswith("__init__.py")


@pytest.mark.parametrize("method, overrides, use", [
    ("source_only", {"mode": "dann"}, "'dann'"),
    ("iimt", {"inter_mixup": False}, "'iimt_no_inter'"),
    ("adda_gan", {"mapping_loss": "minimax"}, "'adda_minimax'"),
    ("dann", {"mode": "domain_only"}, "'domain_only'"),
])
def test_settings_that_make_another_registered_method_are_refused(method, overrides, use):
    with pytest.raises(ValueError, match=f"another registered method's.*use {use}"):
        make_config(method, **overrides)


def test_identity_settings_equal_to_the_methods_own_or_unregistered_are_allowed():
    assert make_config("iimt_no_inter", inter_mixup=False).inter_mixup is False
    # 08's controls: IIMT without reversal and with more switches off, a combination no method registers
    cfg = make_config("iimt_no_adversarial", inter_mixup=False, consistency=False)
    assert (cfg.adversarial, cfg.inter_mixup, cfg.consistency) == (False, False, False)
    assert make_config("dann_deep", network="toy_wide_deep").network == "toy_wide_deep"  # not an identity setting


def test_cdans_optimiser_trains_its_own_head_not_danns_unused_one():
    from dannlib.methods.cdan import CDAN
    from synthetic import bars_data  # tests/synthetic.py
    source, target, _ = bars_data(None)
    m = CDAN(make_config("cdan", steps=2, batch_size=4), source, target, [0])
    trained = {id(p) for group in m.optimizers[0].param_groups for p in group["params"]}
    net, disc = m.nets[0], m.discs[0]
    assert net.domain_classifier is None
    assert trained == {id(p) for p in [*net.parameters(), *disc.parameters()]}
