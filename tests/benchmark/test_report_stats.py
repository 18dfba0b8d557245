"""The report's statistics: CI cells, bold only where significantly best, paired verdicts."""

from __future__ import annotations

import pytest

from benchmark.report import RunRecord, build_report
from benchmark.report_stats import higher_is_better, per_seed, seed_cells


def _record(dataset, optimizer, seed, value, metric="val/top1"):
    return RunRecord(source=f"{dataset}/{optimizer}/{seed}", dataset=dataset, task="classification", optimizer=optimizer, seed=seed, primary_metric=metric, metrics={metric: value})


def _three_seeds():
    sgd = [0.40, 0.41, 0.42]
    clipped = [0.50, 0.52, 0.51]  # paired differences 0.10, 0.11, 0.09: mean 0.10, sd 0.01
    return [_record("imagenet", "sgd", s, v) for s, v in enumerate(sgd)] + [
        _record("imagenet", "clipped_sgd", s, v) for s, v in enumerate(clipped)
    ]


@pytest.mark.parametrize(
    "metric, higher", [("val/top1", True), ("val/miou", True), ("val/psnr", True), ("val/bpc", False), ("val/loss", False), ("train/loss_step", False), ("val/ssim_y", True)]
)
def test_metric_direction(metric, higher):
    assert higher_is_better(metric) is higher


def test_cells_and_bold_by_hand():
    records = _three_seeds()
    # half-width t_{0.975,2} * sd / sqrt(3) = 4.302652729911275 * 0.01 / 1.7320508 = 0.02484 -> 2.48 (%)
    cells = seed_cells(records, "imagenet", "val/top1", ["sgd", "adam", "clipped_sgd"], 100.0, 2)
    assert cells == ["41.00 ± 2.48", "—", "**51.00 ± 2.48**"]
    # for a lower-is-better metric the same numbers make SGD the significantly best
    lower = [_record(r.dataset, r.optimizer, r.seed, r.metrics["val/top1"], "val/loss") for r in records]
    assert seed_cells(lower, "imagenet", "val/loss", ["sgd", "clipped_sgd"], 1.0, 3) == ["**0.410 ± 0.025**", "0.510 ± 0.025"]


def test_paired_section_and_method_in_the_report(tmp_path):
    build_report(_three_seeds(), tmp_path)
    summary = (tmp_path / "summary.md").read_text()
    # mean difference 0.10 ± 0.02484 -> [7.52, 12.48] (%), interval excludes 0: better
    assert "| ImCl | val/top1 | +10.00 [7.52, 12.48] better (n=3) |" in summary
    assert "Holm-corrected" in summary and "Student-t" in summary
    assert "baseline of the paired differences: sgd" in summary


def test_report_with_another_baseline(tmp_path):
    build_report(_three_seeds(), tmp_path, baseline="clipped_sgd")
    summary = (tmp_path / "summary.md").read_text()
    assert "| ImCl | val/top1 | -10.00 [-12.48, -7.52] worse (n=3) |" in summary


def test_per_seed_skips_other_datasets_and_missing_metrics():
    records = _three_seeds() + [_record("voc", "sgd", 0, 0.3, "val/miou")]
    assert per_seed(records, "voc", "val/miou") == {"sgd": {0: 0.3}}
    assert per_seed(records, "imagenet", "val/miou") == {}
