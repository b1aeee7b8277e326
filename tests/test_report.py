"""The Markdown report and the aggregator are built from the records: the numbers printed are
their mean and sample std, failed runs are counted apart and never averaged in, published
numbers come from the one table, and the report finds the project's results from any folder."""
import math
import os
import subprocess
import sys

import pytest

from dann_study.report import markdown_report
from dannlib.results import PUBLISHED, aggregate, format_cell, paired_differences, published_text, write_records


def _recs():
    recs = [
        {"method": "dann", "seed": 0, "steps": 10, "target_test_acc": 0.70, "status": "ok"},
        {"method": "dann", "seed": 1, "steps": 10, "target_test_acc": 0.80, "status": "ok"},
        {"method": "dann", "seed": 2, "steps": 10, "target_test_acc": float("nan"), "status": "diverged"},
        {"method": "source_only", "seed": 0, "steps": 10, "target_test_acc": 0.5, "status": "ok"},
        {"method": "source_only", "seed": 1, "steps": 10, "target_test_acc": 0.6, "status": "ok"},
    ]
    return [dict(r, notebook="03_dann_vs_source_only", profile="smoke", pair="MNIST->MNIST-M") for r in recs]


def test_aggregate_mean_std_failed():
    (dann, so) = aggregate(_recs(), "target_test_acc", ("method",))
    assert dann["n"] == 2 and dann["failed"] == 1 and dann["seeds"] == [0, 1]
    assert dann["mean"] == pytest.approx(0.75) and dann["std"] == pytest.approx(math.sqrt(0.005))
    assert so["mean"] == pytest.approx(0.55)
    assert format_cell(0.75, 0.0707, 2) == "0.750 ± 0.071 (2)"
    assert "no spread" in format_cell(0.75, float("nan"), 1)


def test_paired_differences_per_seed():
    (d,) = paired_differences(_recs(), "target_test_acc", baseline="source_only")
    # only seeds where both ran ok: 0 and 1; differences 0.2 and 0.2
    assert d["method"] == "dann" and d["seeds"] == [0, 1] and d["diffs"] == pytest.approx([0.2, 0.2])


def test_published_numbers_one_table():
    assert PUBLISHED[("mnist->mnist_m", "dann")][0] == 0.7666
    assert published_text("mnist->mnist_m", "dann") == ".7666"
    assert published_text("mnist->mnist_m", "train_on_target") == ".9596"  # read in the JMLR paper's table 2
    assert not any("(?)" in cite for _, cite in PUBLISHED.values())  # every entry's check: docs/protocol.md
    assert published_text("mnist->mnist_m", "iimt") == "—"


def test_report_means_from_records(tmp_path):
    write_records(tmp_path, "03_dann_vs_source_only", "smoke", _recs())
    text = markdown_report(tmp_path, "smoke")
    section = text[text.index("### MNIST → MNIST-M (notebook 03)"):]
    line = next(l for l in section.splitlines() if l.startswith("| MNIST->MNIST-M | dann |"))
    assert "0.7500 ± 0.0707 (2)" in line and "| 1 |" in line and ".7666" in line
    assert "seeds 0, 1, 2" in text
    assert "no records: notebook 05" in text


def test_report_keeps_03s_two_mnist_m_pairs_apart(tmp_path):
    released = [dict(r, pair="MNIST->MNIST-M (released)", target_test_acc=r["target_test_acc"] - 0.2)
                for r in _recs()]
    write_records(tmp_path, "03_dann_vs_source_only", "smoke", _recs() + released)
    text = markdown_report(tmp_path, "smoke")
    section = text[text.index("### MNIST → MNIST-M (notebook 03)"):]
    rows = [l for l in section.splitlines() if "| dann |" in l]
    assert "0.7500 ± 0.0707 (2)" in rows[0] and "0.5500 ± 0.0707 (2)" in rows[1] and "(released)" in rows[1]


def test_report_errors(tmp_path):
    with pytest.raises(ValueError, match="profile"):
        markdown_report(tmp_path, "fast")
    with pytest.raises(FileNotFoundError, match="make figures PROFILE=quick"):
        markdown_report(tmp_path, "quick")


def test_report_finds_results_from_any_folder(tmp_path):
    """Run from an unrelated working directory, `report` reads the project's results/
    ($DANNLIB_RESULTS unset), not ./results."""
    env = {k: v for k, v in os.environ.items() if k != "DANNLIB_RESULTS"}
    from dannlib.utils import PROJECT_ROOT

    profile = next((p for p in ("quick", "paper") if (PROJECT_ROOT / "results" / p).is_dir()), None)
    if profile is None:
        pytest.skip("no committed results folder to read")
    out = subprocess.run([sys.executable, "-m", "dann_study", "report", "--profile", profile], cwd=tmp_path,
                         env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert f"Profile `{profile}`" in out.stdout


def test_negative_or_empty_seeds_are_refused_up_front(tmp_path):
    """--seeds=-1 used to be accepted (notebook 01 recorded seed -1, notebook 02 failed late in
    its kernel): now every command refuses it before any notebook or run starts."""
    from dann_study.plan import parse_seeds

    with pytest.raises(ValueError, match=">= 0"):
        parse_seeds("-1")
    with pytest.raises(ValueError, match="at least one"):
        parse_seeds(",")
    with pytest.raises(ValueError, match="comma-separated integers"):
        parse_seeds("1_0")  # int() alone would read 10
    for cmd in (["regenerate", "--only", "01"], ["sweep", "--only", "01", "--dry-run"]):
        out = subprocess.run([sys.executable, "-m", "dann_study", *cmd, "--seeds=-1"], cwd=tmp_path,
                             capture_output=True, text=True)
        assert out.returncode == 2 and ">= 0" in out.stderr, (cmd, out.stderr)


def test_report_states_the_from_scratch_wall_time(tmp_path):
    """The wall time the report prints is the from-scratch regeneration's, not a later render's."""
    import json

    write_records(tmp_path, "03_dann_vs_source_only", "smoke", _recs())
    (tmp_path / "smoke" / "regeneration.json").write_text(json.dumps({
        "profile": "smoke", "notebooks": {"03_dann_vs_source_only": {"status": "ok", "seconds": 3.0, "run": "b"}},
        "runs": {"b": {"started_at": "b", "wall_seconds": 5.0, "machine": {"host": "h"},
                       "parameters": {"profile": "smoke", "train_missing": "stored"}}},
        "from_scratch": {"started_at": "a", "wall_seconds": 1383.0, "sweep": {"trained": 76, "seconds": 1200.0}}}))
    text = markdown_report(tmp_path, "smoke")
    assert "| 03_dann_vs_source_only | ok, partial: only the runs stored then | 3 |" in text
    assert "took 23.1 min of wall time (`wall_seconds` 1383; started a; its sweep trained 76 runs in 20.0 min)" in text


def test_report_names_the_machine_of_each_notebook(tmp_path):
    """Notebooks last executed on two machines: both are named, each with its notebooks (not the first run's alone)."""
    import json

    write_records(tmp_path, "03_dann_vs_source_only", "smoke", _recs())
    machine = {"device": "cpu", "cpu_model": "EPYC", "cpu_count": 2, "torch": "2.14.1"}
    (tmp_path / "smoke" / "regeneration.json").write_text(json.dumps({
        "profile": "smoke", "notebooks": {n: {"status": "ok", "seconds": 1.0, "run": r}
                                          for n, r in (("01_a", "x"), ("02_b", "y"), ("03_c", "y"))},
        "runs": {"x": {"machine": {**machine, "host": "one"}}, "y": {"machine": {**machine, "host": "two"}}}}))
    line = next(t for t in markdown_report(tmp_path, "smoke").split("\n\n") if t.startswith("Machine"))
    assert "one, cpu (EPYC), 2 CPUs, torch 2.14.1 (notebook 01)" in line
    assert "two, cpu (EPYC), 2 CPUs, torch 2.14.1 (notebooks 02, 03)" in line


def test_report_prints_the_paired_comparison_and_the_headline(tmp_path):
    write_records(tmp_path, "03_dann_vs_source_only", "smoke", _recs())
    text = markdown_report(tmp_path, "smoke")
    # dann − source_only on seeds 0 and 1: differences 0.2 and 0.2, no spread: the interval is the point [0.2, 0.2],
    # no evidence of a difference (two seeds that agree exactly)
    assert "| dann − source_only | 2 | +0.200 | [+0.200, +0.200] | 0.5 | no clear difference |" in text
    # the headline: ours against the published number as printed (.7666), the gap and its interval by hand:
    # sd 0.0707, t_{0.975, 1} = 12.706, half-width 12.706 * 0.0707 / sqrt(2) = 0.635; -0.0166 -+ 0.635
    assert "| dann | 0.750 ± 0.071 (2) | .7666 | -0.017 [-0.652, +0.619] | Ganin et al. 2016 (JMLR), table 2 |" in text


def test_comparison_table_by_hand():
    from dann_study.report import comparison_table

    recs = [{"method": m, "pair": p, "seed": s, "acc": v, "status": "ok"}
            for p in ("A->B", "B->A") for s, (x, y) in enumerate([(2, 1), (4, 2), (6, 3)])
            for m, v in (("x", x), ("y", y))]
    from dannlib.stats import compare_records
    rows = [(p, "acc", compare_records(recs, "acc", "x", "y", where={"pair": p})) for p in ("A->B", "B->A")]
    table = comparison_table(rows, group="pair")
    # differences 1, 2, 3: mean 2, t_{0.975,2} sd/sqrt(3) = 2.484; sign test 0.25
    assert "| A->B | x − y | 3 | +2.000 | [-0.484, +4.484] | 0.25 | no clear difference |" in table
    assert table.splitlines()[0] == "| pair | comparison | n | mean diff | 95% CI | sign-test p | verdict |"


def test_comparisons_skip_what_no_seed_shares_and_refuse_unknown_names():
    from dann_study.report import comparisons

    recs = [{"method": "dann", "seed": 0, "target_test_acc": 0.7}, {"method": "source_only", "seed": 1,
                                                                   "target_test_acc": 0.5}]
    assert comparisons(recs, "03") == []
    with pytest.raises(ValueError, match="name must be one of"):
        comparisons(recs, "07")


def test_published_numbers_print_as_published():
    from dannlib.results import published_text

    # the papers print .5225 and .730: every digit, at least three
    assert published_text("mnist->mnist_m", "source_only", None) == ".5225"
    assert published_text("usps->mnist", "dann_lenet", None) == ".730"
    assert published_text("mnist->mnist_m", "source_only", 3) == ".522" and published_text("x", "y", None) == "—"


def test_published_table_and_threshold_counts():
    from dann_study.report import published_table, threshold_counts

    recs = [dict(r, pair="MNIST->USPS") for r in _recs()] + [
        {"method": "adda_gan", "pair": "MNIST->USPS", "seed": s, "target_test_acc": v, "status": "ok"}
        for s, v in enumerate([0.85, 0.87])]
    table = published_table(recs, "target_test_acc", group="pair")
    # half-width 12.706 * 0.01414 / sqrt(2) = 0.127 about -0.034
    assert ("| MNIST->USPS | adda_gan | 0.860 ± 0.014 (2) | .894 | -0.034 [-0.161, +0.093] | Tzeng et al. 2017, "
            "table 2 (ADDA) |") in table
    assert "| dann |" not in table  # no published number for dann on MNIST->USPS
    no_interval = published_table(recs, "target_test_acc", group="pair", interval=False)  # e.g. 01's expectations
    assert "| MNIST->USPS | adda_gan | 0.860 ± 0.014 (2) | .894 | -0.034 | Tzeng" in no_interval
    one = published_table(recs[-1:], "target_test_acc", group="pair")  # one seed: the gap, no interval
    assert "| MNIST->USPS | adda_gan | 0.870 (1 seed: no spread) | .894 | -0.024 | Tzeng" in one
    counts = threshold_counts(recs, "target_test_acc", 0.65)
    assert counts.loc["dann", "target_test_acc"] == "2 of 2"
    assert counts.loc["source_only", "target_test_acc"] == "0 of 2"
    assert threshold_counts(recs, "target_test_acc", 0.55, below=True).loc["source_only"].item() == "1 of 2"


def test_final_trend_by_hand():
    from dann_study.report import final_trend

    hist = [{"seed": s, "step": t, "acc": 0.1 * t + s} for s in (0, 1) for t in range(1, 11)]
    table = final_trend({"m": hist}, "acc", fraction=0.2)
    # mean over seeds at step 10: 1.0 + 0.5; over the last 2 of 10 points (steps 8 -> 10): +0.2
    assert table.loc["m", "acc at the last step"] == "1.500"
    assert table.loc["m", "change over the last 2 steps"] == "+0.200"
    with pytest.raises(ValueError, match="fraction"):
        final_trend({"m": hist}, "acc", fraction=1.5)


def test_final_trend_leaves_out_a_run_that_did_not_finish_ok():
    from dann_study.report import final_trend

    hist = [{"seed": 0, "step": t, "acc": 0.7, "status": "ok"} for t in (1, 2)]
    hist += [{"seed": 1, "step": t, "acc": 0.1, "status": "ok" if t == 1 else "diverged"} for t in (1, 2)]
    assert final_trend({"m": hist}, "acc").loc["m", "acc at the last step"] == "0.700"  # not the mean 0.400


def test_head_to_head_states_the_paired_verdict_per_pair():
    from dann_study.report import head_to_head

    recs = [{"pair": "P", "method": m, "seed": s, "target_test_acc": v, "status": "ok"}
            for m, vals in (("a", [0.80, 0.82, 0.81]), ("b", [0.70, 0.71, 0.73])) for s, v in enumerate(vals)]
    recs += [{"pair": "Q", "method": m, "seed": s, "target_test_acc": v, "status": "ok"}
             for m, vals in (("a", [0.5, 0.7, 0.6]), ("b", [0.6, 0.6, 0.6])) for s, v in enumerate(vals)]
    text = head_to_head(recs, "a", "b")
    # P: diffs 0.10, 0.11, 0.08 -> mean +0.097, interval above 0; Q: diffs -0.1, 0.1, 0 -> no clear difference
    assert "**P**: a beats b? yes: a − b = +0.097" in text and "3 seeds (3 higher, 0 lower)" in text
    assert "**Q**: a beats b? not shown (no clear difference): a − b = +0.000" in text
    assert head_to_head(recs, "a", "c") == "(no seed shared by a and c)"


def test_curve_summary_leaves_out_runs_that_did_not_finish_ok():
    from types import SimpleNamespace

    from dann_study.diagnose import curve_summary
    runs = [({"pair": "P"}, SimpleNamespace(status=status, spec=SimpleNamespace(seed=seed),
                                            history=[{"step": 1, "acc": 0.5}, {"step": 2, "acc": 0.4}]))
            for seed, status in ((0, "ok"), (1, "collapsed"))]
    assert list(curve_summary(runs, "acc")["seed"]) == [0]


def test_damaged_records_are_named(tmp_path):
    from dann_study.report import markdown_report
    from dannlib.results import read_records
    folder = tmp_path / "smoke"
    folder.mkdir()
    bad = folder / "03_dann_vs_source_only.jsonl"
    bad.write_text('{"method": "dann", "seed": 0}\n<<<<<<< HEAD\n')
    with pytest.raises(ValueError, match=r"03_dann_vs_source_only\.jsonl, line 2: not a JSON record"):
        read_records(bad)
    bad.write_text("[1, 2]\n")
    with pytest.raises(ValueError, match="line 1: a JSON list, not a record"):
        read_records(bad)
    bad.unlink()
    for text, why in (("[]", "a JSON list"), ("{", "not JSON")):
        (folder / "regeneration.json").write_text(text)
        with pytest.raises(ValueError, match=f"regeneration.json is not a regeneration report \\({why}"):
            markdown_report(tmp_path, "smoke")
