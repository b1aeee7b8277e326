"""The Markdown report is built from the records: the numbers it prints are their mean and
std, failed runs are counted apart and never averaged in."""
import json

import pytest

from dannlib.report import markdown_report
from dannlib.records import write_records


def test_report_means_from_records(tmp_path):
    recs = [
        {"method": "dann", "seed": 0, "steps": 10, "target_test_acc": 0.70, "source_test_acc": 0.9, "status": "ok"},
        {"method": "dann", "seed": 1, "steps": 10, "target_test_acc": 0.80, "source_test_acc": 0.9, "status": "ok"},
        {"method": "dann", "seed": 2, "steps": 10, "target_test_acc": float("nan"), "status": "diverged"},
        {"method": "source_only", "seed": 0, "steps": 10, "target_test_acc": 0.5, "source_test_acc": 0.99, "status": "ok"},
    ]
    recs = [dict(r, notebook="03_dann_vs_source_only", profile="smoke") for r in recs]
    write_records(tmp_path, "03_dann_vs_source_only", "smoke", recs)
    text = markdown_report(tmp_path, "smoke")
    line = next(l for l in text.splitlines() if l.startswith("| dann |"))
    # mean 0.75, sample std 0.0707 over the two ok seeds; one failed run; the paper's .7666 beside it
    assert "0.7500 ± 0.0707 (2)" in line and "| 1 |" in line and ".7666" in line
    assert "seeds 0, 1, 2" in text
    assert "no records: notebook 05" in text


def test_report_errors(tmp_path):
    with pytest.raises(ValueError, match="profile"):
        markdown_report(tmp_path, "fast")
    with pytest.raises(FileNotFoundError, match="make figures PROFILE=quick"):
        markdown_report(tmp_path, "quick")


def test_report_pools_several_folders(tmp_path):
    for folder, seed, acc in (("a", 0, 0.6), ("b", 1, 0.8)):
        rec = {"notebook": "03_dann_vs_source_only", "profile": "smoke", "method": "dann", "seed": seed,
               "steps": 10, "target_test_acc": acc, "status": "ok"}
        write_records(tmp_path / folder, "03_dann_vs_source_only", "smoke", [rec])
    text = markdown_report([tmp_path / "a", tmp_path / "b"], "smoke")
    line = next(l for l in text.splitlines() if l.startswith("| dann |"))
    assert "0.7000 ± 0.1414 (2)" in line
    assert "a/03_dann_vs_source_only.jsonl" in text and "b/03_dann_vs_source_only.jsonl" in text
