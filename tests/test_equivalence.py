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
