"""benchmarks/equivalence.py: issue 22's rule for a speed lever ("unchanged": the paired 95% interval holds 0 and
its half-width is under 1 point, over at least 3 seeds), and the two arms it trains."""
import pytest

from benchmarks.equivalence import CASES, default_specs, lever_spec, verdict
from dannlib.stats import paired


def _comparison(diffs):
    return paired(dict(enumerate(diffs)), dict.fromkeys(range(len(diffs)), 0.0), a_name="lever", b_name="default")


def test_the_rule_by_hand():
    # mean 0.001, sd 0.001, t_{0.975, 2} = 4.303: half-width 0.0025 -> unchanged
    assert verdict(_comparison([0.0, 0.001, 0.002])).startswith("unchanged")
    # mean 0.0, sd 0.01: half-width 4.303 * 0.01 / sqrt(3) = 0.0248 holds 0 but is wider than 1 point
    assert verdict(_comparison([-0.01, 0.0, 0.01])) == ("not shown unchanged (interval holds 0 but its half-width "
                                                         "is 2.5 points)")
    assert verdict(_comparison([0.02, 0.03, 0.025])).startswith("changed")
    assert verdict(_comparison([0.0, 0.001])).startswith("not judged: 2 seed(s)")
    # bit-identical runs pass; one difference repeated on every seed is an interval of no width that excludes 0
    assert verdict(_comparison([0.0, 0.0, 0.0])) == "unchanged (bit-identical on every seed)"
    assert verdict(_comparison([0.001] * 3)).startswith("changed")


def test_a_run_that_did_not_finish_ok_is_never_read_as_unchanged():
    ok = {s: "ok" for s in range(3)}
    close = _comparison([0.0, 0.001])  # the two seeds both arms finished
    assert verdict(close, {"default": ok, "contiguous": {**ok, 2: "diverged"}}) == ("changed (contiguous runs not ok "
                                                                                   "on seeds [2])")
    assert verdict(close, {"default": {**ok, 1: "failed"}, "contiguous": ok}).startswith("not judged: default")


@pytest.mark.parametrize("method", sorted(CASES))
def test_the_arms_differ_only_in_the_lever(method):
    base = default_specs(method, [0, 1, 2])
    assert [s.seed for s in base] == [0, 1, 2] and all(s.method == method for s in base)
    for spec in base:
        lever = lever_spec(spec, "contiguous")
        assert spec.config["channels_last"] is None and lever.config == {**spec.config, "channels_last": False}
        assert lever.key != spec.key and (lever.data, lever.seed, lever.monitor_size) == (spec.data, spec.seed,
                                                                                          spec.monitor_size)
        # ADDA: both arms start from the same stored pre-training
        assert [d.key for d in lever.dependencies()] == [d.key for d in spec.dependencies()]


def test_estimate_against_records_counts_each_run_once(tmp_path):
    """Runs shared by notebooks (and ADDA's pre-trainings) count once; an empty store has them all missing."""
    from benchmarks.estimate_vs_records import compare
    from dann_study.plan import NOTEBOOKS, plan_specs
    from dannlib.store import Store

    keys = {run.key for nb in NOTEBOOKS for spec in plan_specs(nb, "smoke") for run in [*spec.dependencies(), spec]}
    out = compare(Store(tmp_path / "empty"), "smoke")
    assert out["missing"] == len(keys) and out["runs"] == 0 and out["methods"] == {}
