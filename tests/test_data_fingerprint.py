"""Changed data is noticed by the store (issue 24): a run records the fingerprint of the files
its data came from; when they change (a replaced BSDS500 background, with no SHA256SUMS to
catch it) the stored run is warned about and recomputed; an unchanged one, or one stored
before fingerprints, is reused. Keys and STORE_FORMAT do not change. The backfill gives
older records the fingerprint of checksum-verified data and changes nothing else."""
from __future__ import annotations

import hashlib
import json
import warnings

import pytest
import torch

import dannlib.store as store_mod
from dann_study.__main__ import main
from dannlib.data import fingerprint as fp_mod
from dannlib.data.common import DataChecksumError
from dannlib.results import dumps
from dannlib.store import STORE_FORMAT, RunSpec, Store, digits_data
from dannlib.sweep import ensure
from dannlib.training import Domain

FILES = ["MNIST/raw/train-images-idx3-ubyte.gz", "MNIST/raw/train-labels-idx1-ubyte.gz",
         "MNIST/raw/t10k-images-idx3-ubyte.gz", "MNIST/raw/t10k-labels-idx1-ubyte.gz",
         "BSDS500/images/train/2092.jpg", "BSDS500/images/train/8049.jpg"]


@pytest.fixture
def data_root(tmp_path):
    """A stand-in data root: the files MNIST-M is made from (their bytes only are read by the
    fingerprint; training reads a patched ``load_data``)."""
    root = tmp_path / "data"
    for i, rel in enumerate(FILES):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(f"file {i}".encode() * 100)
    fp_mod.clear_cache()
    yield root
    fp_mod.clear_cache()


def _write_sums(root):
    lines = [f"{hashlib.sha256((root / rel).read_bytes()).hexdigest()}  {rel}" for rel in FILES]
    (root / "SHA256SUMS").write_text("\n".join(lines) + "\n")


@pytest.fixture
def fake_training_data(monkeypatch):
    def fake_load_data(data, data_root=None):
        g = torch.Generator().manual_seed(0)
        x, y = torch.rand(40, 3, 28, 28, generator=g), torch.arange(40) % 10
        return (Domain("src", x, y), Domain("tgt", x.flip(0), y),
                {"source_test": Domain("src", x, y), "target_test": Domain("tgt", x, y)})

    monkeypatch.setattr(store_mod, "load_data", fake_load_data)


SPEC = RunSpec.make("source_only", digits_data("mnist", "mnist_m", n_source=40, n_target=40, n_test=40), 0,
                    network="digits", steps=2, batch_size=8, eval_every=1, monitor_size=20)


def test_a_run_trained_on_changed_data_is_recomputed(tmp_path, data_root, fake_training_data):
    key = SPEC.key
    store = Store(tmp_path / "store")
    ensure([SPEC], store=store, workers=1, data_root=data_root, progress=False)
    assert ensure.last_summary.failed == []
    record = json.loads(store.path(SPEC).read_text())
    assert set(record["data_fingerprint"]) == {"format", "mnist", "mnist_m"}

    # the same data: reused, without a word
    fp_mod.clear_cache()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ensure([SPEC], store=store, workers=1, data_root=data_root, progress=False)
    assert ensure.last_summary.found == 1 and ensure.last_summary.trained == 0

    # one background replaced (no SHA256SUMS in this data root): recomputed
    (data_root / FILES[-1]).write_bytes(b"another picture")
    fp_mod.clear_cache()
    with pytest.warns(UserWarning, match=r"trained on other data .*mnist_m: recorded"):
        ensure([SPEC], store=store, workers=1, data_root=data_root, progress=False)
    assert ensure.last_summary.found == 0 and ensure.last_summary.trained == 1
    again = json.loads(store.path(SPEC).read_text())
    assert again["data_fingerprint"]["mnist_m"] != record["data_fingerprint"]["mnist_m"]
    assert again["data_fingerprint"]["mnist"] == record["data_fingerprint"]["mnist"]
    assert SPEC.key == key and again["spec"]["store_format"] == STORE_FORMAT  # no key or format change


def test_a_record_without_a_fingerprint_or_without_data_is_reused(tmp_path, data_root, fake_training_data):
    store = Store(tmp_path / "store")
    ensure([SPEC], store=store, workers=1, data_root=data_root, progress=False)
    path = store.path(SPEC)
    blob = json.loads(path.read_text())
    del blob["data_fingerprint"]  # as stored before fingerprints
    path.write_text(dumps(blob) + "\n")
    (data_root / FILES[-1]).write_bytes(b"another picture")
    fp_mod.clear_cache()
    assert Store(store.root, data_root=data_root).get(SPEC) is not None
    # a fingerprinted record read where the data is missing (render-only machine): reused
    ensure([SPEC], store=store, workers=1, data_root=data_root, recompute=True, progress=False)
    assert Store(store.root, data_root=tmp_path / "nowhere").get(SPEC) is not None


def test_backfill_adds_only_the_fingerprint_of_verified_data(tmp_path, data_root, fake_training_data, capsys):
    store = Store(tmp_path / "store")
    ensure([SPEC], store=store, workers=1, data_root=data_root, progress=False)
    path = store.path(SPEC)
    blob = json.loads(path.read_text())
    fingerprint = blob.pop("data_fingerprint")
    old_text = dumps(blob) + "\n"
    path.write_text(old_text)

    # not vouched for (no SHA256SUMS): refused, nothing written
    fp_mod.clear_cache()
    with pytest.raises(DataChecksumError, match="SHA256SUMS"):
        fp_mod.backfill_store(store.root, data_root)
    argv = ["sweep", "--backfill-fingerprints", "--store", str(store.root), "--data-root", str(data_root)]
    assert main(argv) == 2 and path.read_text() == old_text
    capsys.readouterr()

    _write_sums(data_root)
    fp_mod.clear_cache()
    assert main([*argv, "--dry-run"]) == 0 and path.read_text() == old_text
    assert "1 record(s) would get the data fingerprint" in capsys.readouterr().out
    assert main(argv) == 0
    new = json.loads(path.read_text())
    assert new.pop("data_fingerprint") == fingerprint and dumps(new) + "\n" == old_text
    assert main(argv) == 0 and "0 record(s) got" in capsys.readouterr().out  # idempotent
