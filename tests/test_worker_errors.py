"""Errors cross process boundaries intact: every project exception survives pickling, a sweep
worker reports the error it met (missing data names DANNLIB_DATA) instead of being taken for
dead and retried, and a notebook whose runs all failed says which and why (issue 24)."""
from __future__ import annotations

import importlib
import inspect
import pickle
import pkgutil
import signal

import pytest

import dann_study
import dannlib
from dann_study.regenerate import Interrupted
from dannlib.data.common import CacheNotWritableError, DataChecksumError, DataNotFoundError
from dannlib.store import RunSpec, Store, digits_data
from dannlib.sweep import MissingRunsError, RunError, RunsFailedError, ensure

#: One instance of every exception class defined in dannlib and dann_study, by qualified name. A new class
#: must be added here (the test below finds them all), so that it is checked too.
EXAMPLES = {
    "dannlib.data.common.DataNotFoundError":
        lambda: DataNotFoundError("MNIST", ["/nowhere/MNIST", "/else/MNIST"], hint="see data/README.md"),
    "dannlib.data.common.DataChecksumError": lambda: DataChecksumError("bad file", dataset="usps", path="/x/usps.bz2"),
    "dannlib.data.common.CacheNotWritableError": lambda: CacheNotWritableError("the cache folder /c is not writable"),
    "dannlib.sweep.MissingRunsError": lambda: MissingRunsError("3 of 5 runs are not in the store"),
    "dannlib.sweep.RunsFailedError": lambda: RunsFailedError("all 2 runs failed"),
    "dann_study.regenerate.Interrupted": lambda: Interrupted(signal.SIGTERM),
    "dannlib.sweep.RunError": lambda: RunError("SomeLibraryError", "it broke"),
}


def _project_exceptions() -> dict[str, type]:
    found = {}
    mods = [*pkgutil.walk_packages(dannlib.__path__, "dannlib."),
            *pkgutil.walk_packages(dann_study.__path__, "dann_study.")]
    for mod in mods:
        if mod.name == "dann_study.__main__":
            continue
        module = importlib.import_module(mod.name)
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, BaseException) and obj.__module__.startswith(("dannlib", "dann_study")):
                found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return found


def test_every_project_exception_is_listed():
    assert set(_project_exceptions()) == set(EXAMPLES)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_project_exception_survives_pickling(name):
    exc = EXAMPLES[name]()
    back = pickle.loads(pickle.dumps(exc))
    assert type(back) is type(exc)
    assert str(back) == str(exc) and back.args == exc.args
    assert vars(back) == vars(exc)


def _digits_specs(n=2):
    data = digits_data("mnist", "usps", n_source=20, n_target=20, n_test=20, channels=1)
    return [RunSpec.make("source_only", data, seed, steps=2, batch_size=8, eval_every=1, network="digits",
                         monitor_size=20) for seed in range(n)]


def test_sweep_workers_report_missing_data(tmp_path, capsys):
    """Two worker processes meet a data root with nothing in it: each run fails once, with
    the data error (naming DANNLIB_DATA), and is not retried as if its worker had died."""
    out = ensure(_digits_specs(), store=Store(tmp_path / "store"), workers=2, data_root=tmp_path / "nowhere",
                 progress=False)
    summary = ensure.last_summary
    assert out == {} and summary.trained == 0 and len(summary.failed) == 2
    for _label, err in summary.failed:
        assert err.startswith("DataNotFoundError: ") and "DANNLIB_DATA" in err, err
        assert "died" not in err
    assert "retrying" not in capsys.readouterr().err


def test_fetch_whose_runs_all_failed_names_them(tmp_path, monkeypatch):
    """A plan whose runs all failed raises RunsFailedError listing each run and its error
    (not the pandas KeyError of an empty table later)."""
    from dann_study import plan as plan_mod

    monkeypatch.setenv("DANNLIB_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(RunsFailedError) as e:
        plan_mod.fetch("05", "smoke", store=Store(tmp_path / "store"), workers=1, train_missing=True,
                       progress=False)
    msg = str(e.value)
    assert "all" in msg and "failed" in msg and "DataNotFoundError" in msg and "DANNLIB_DATA" in msg
    assert "adda_gan seed 0" in msg


def test_summary_table_of_no_records_says_so():
    from dannlib.results import summary_table

    with pytest.raises(ValueError, match="no records"):
        summary_table([], "target_test_acc")
