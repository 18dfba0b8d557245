"""``python -m benchmark noise`` end to end on the embedded tasks, at smoke-test sizes.

The runs are in-process (``main(argv)``) with tiny batches and patches so that the module
stays under a minute on 2 CPU cores; the statistics themselves are tested in
test_noise_estimators.py and test_noise_probe.py.
"""

from __future__ import annotations

import contextlib
import io
import json
import re

import pytest

from benchmark.cli import main as dispatch
from benchmark.noise.cli import main
from benchmark.noise.report import find_noise_results, noise_section, read_summaries

pytestmark = pytest.mark.embedded

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def div2k_run(tmp_path_factory, embedded_data_root):
    """One task with training: probes at 0, every 2 steps (step 2) and at the end (step 3)."""
    from datamodules.embedded.store import ENV_VAR

    out = tmp_path_factory.mktemp("noise") / "div2k-run"
    argv = [
        "--quick", "--datasets", "div2k", "--train-steps", "3", "--probe-every", "2", "--out", str(out),
        "--", "--data.init_args.batch_size", "4", "--data.init_args.patch_size", "24",
    ]
    stdout, stderr = io.StringIO(), io.StringIO()  # capsys is per test; this run serves three
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        mp.setenv(ENV_VAR, str(embedded_data_root))
        rc = main(argv)
    return rc, out, stdout.getvalue(), stderr.getvalue()


def test_run_writes_table_json_and_plots(div2k_run):
    rc, out, _, _ = div2k_run
    assert rc == 0
    summaries = read_summaries(out)
    assert [(s.task, s.step) for s in summaries] == [("div2k", 0), ("div2k", 2), ("div2k", 3)]
    for s in summaries:
        assert s.num_batches == 8 and s.batch_size == 4 and s.subset_size == 8  # --quick: 2 batches' worth
        assert s.alpha is not None and 0 < s.alpha.low <= s.alpha.alpha <= s.alpha.high <= 2
        for kind in ("hist", "qq"):
            png = out / "div2k" / f"div2k_step{s.step}_{kind}.png"
            assert png.read_bytes()[:8] == PNG_MAGIC
    assert (out / "alpha_trajectory.png").read_bytes()[:8] == PNG_MAGIC
    assert (out / "div2k" / "alpha_trajectory.png").is_file()

    table = (out / "noise_table.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| div2k |")]
    assert len(rows) == 3 and all(row.split("|")[9].strip() in ("yes", "no") for row in rows)
    assert "heavy-tailed = upper end of the α interval < 1.9" in table

    meta = json.loads((out / "summary.json").read_text())
    task = meta["tasks"]["div2k"]
    assert [p["step"] for p in task["probes"]] == [0, 2, 3]
    assert task["heavy_tailed"] == summaries[-1].heavy_tailed
    assert task["settings"]["optimizer"] == "sgd" and task["settings"]["train_steps"] == 3
    assert set(task["time"]) >= {"total_s", "probes_s", "training_s", "cpu_s"} and task["time"]["total_s"] > 0
    assert task["load_1min"]["min"] >= 0
    assert meta["machine"]["torch_threads"] == 1  # --threads' default, recorded as run (restored afterwards)

    # The Lightning run: trained exactly 3 steps, noise metrics in the CSV, no checkpoints.
    run = out / "div2k" / "run"
    assert json.loads((run / "final.json").read_text())["global_step"] == 3
    assert "noise/alpha" in next(run.glob("csv/*/metrics.csv")).read_text().splitlines()[0]
    assert not (run / "checkpoints").exists()


def test_run_prints_verdict_alpha_movement_and_progress(div2k_run):
    _, out, stdout, stderr = div2k_run
    verdict = next(line for line in stdout.splitlines() if line.startswith("div2k: heavy-tailed: "))
    assert "over steps 0 → 2 → 3" in verdict and verdict.count("→") >= 4
    assert "| div2k | 3 | 8 |" in stdout  # the table
    assert "time:" in stdout and "load" in stdout
    assert f"wrote {out}/" in stdout
    assert "probe: noise" in stderr and "training: step" in stderr  # the progress bar


def test_noise_section_for_the_bench_report(div2k_run, tmp_path):
    _, out, _, _ = div2k_run
    section = (out / "noise_report.md").read_text()
    assert section == noise_section(out)
    assert section.startswith("## Gradient noise")
    assert "| div2k | 0 |" in section and "- div2k: heavy-tailed:" in section
    assert "![α during training](alpha_trajectory.png)" in section
    # Found from a parent folder (results/ holding noise/<timestamp>/), links relative to the report.
    assert find_noise_results(out.parent) == out
    linked = noise_section(out.parent, relative_to=out.parent / "bench-report", heading="### Noise")
    assert linked.startswith("### Noise") and f"](../{out.name}/alpha_trajectory.png)" in linked
    assert noise_section(tmp_path) == "" and find_noise_results(tmp_path / "missing") is None


def test_all_tasks_probe_at_initialisation_only_and_one_report_over_two_calls(tmp_path, embedded_data_root, capsys):
    common = ["--quick", "--train-steps", "0", "--num-batches", "6", "--no-progress", "--out", str(tmp_path)]
    tiny = ["--", "--data.init_args.batch_size", "4"]
    assert main([*common, "--datasets", "imagenet", "voc", *tiny]) == 0
    assert main([*common, "--datasets", "div2k", *tiny]) == 0  # same --out: added to the report
    summaries = read_summaries(tmp_path)
    assert [(s.task, s.step) for s in summaries] == [("imagenet", 0), ("voc", 0), ("div2k", 0)]
    assert list(json.loads((tmp_path / "summary.json").read_text())["tasks"]) == ["imagenet", "voc", "div2k"]
    assert "probes at initialisation only" in (tmp_path / "noise_report.md").read_text()
    stdout = capsys.readouterr().out
    for task in ("imagenet", "voc", "div2k"):
        assert f"{task}: heavy-tailed: " in stdout
        assert (tmp_path / task / f"{task}_step0_qq.png").is_file()
        # --train-steps 0: the run stopped before its first step.
        assert json.loads((tmp_path / task / "run" / "final.json").read_text())["global_step"] == 0


def test_probe_reports_each_gradient_to_on_batch():
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from benchmark.noise import GradientNoiseProbe

    model = torch.nn.Linear(3, 1)
    data = TensorDataset(torch.randn(20, 3), torch.randn(20, 1))
    calls = []
    probe = GradientNoiseProbe(model, lambda b: torch.nn.functional.mse_loss(model(b[0]), b[1]), num_batches=5,
                               sketch_dim=4, on_batch=lambda *a: calls.append(a))
    probe.run(DataLoader(data, batch_size=8))
    assert calls == [("full", 1, 3), ("full", 2, 3), ("full", 3, 3)] + [("noise", i, 5) for i in range(1, 6)]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--num-batches", "2"], "--num-batches 2: must be >= 4"),
        (["--train-steps", "-1"], "--train-steps -1: must be >= 0"),
        (["--num-samples", "8", "--batch-size", "8"], "--num-samples 8 must exceed --batch-size 8"),
        (["--datasets", "mnist"], "invalid choice: 'mnist'"),
        (["--datasets", "voc", "--config", "x.yaml"], "--datasets and --config exclude each other"),
        (["--config", "no/such.yaml"], "--config: no such file: no/such.yaml"),
        (["--config", __file__, "--optimizer", "adam"], "with --config, set model.init_args.optimizer"),
    ],
)
def test_bad_arguments_are_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_unknown_optimizer_lists_the_configs(capsys):
    assert dispatch(["noise", "--optimizer", "lamb"]) == 2
    err = capsys.readouterr().err
    assert "error: no optimizer config" in err and "configs exist for: adam, adamw_autoclip, adamw_zclip, clipped_adam, clipped_sgd, clipped_sstm, lion" in err


def test_subset_larger_than_the_training_set_and_reused_out(tmp_path, embedded_data_root, capsys):
    argv = ["noise", "--datasets", "div2k", "--num-samples", "100000", "--no-progress", "--out", str(tmp_path)]
    assert dispatch(argv) == 2
    err = capsys.readouterr().err
    assert re.search(r"error: div2k: Invalid num_samples: 100000 \(the training set offers \d+ probe samples\); "
                     "lower --num-samples", err)

    (tmp_path / "div2k").mkdir()
    (tmp_path / "div2k" / "noise_summaries.jsonl").write_text("")
    assert dispatch(["noise", "--datasets", "div2k", "--no-progress", "--out", str(tmp_path)]) == 2
    assert "already holds noise results; pass another --out" in capsys.readouterr().err


def test_help_documents_the_options(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--datasets", "--config", "--optimizer", "--train-steps", "--probe-every", "--num-batches",
                 "--num-samples", "--batch-size", "--out", "--quick", "--wandb", "--threads"):
        assert flag in text
    assert "Heavy-tailed = the whole α interval lies below 1.9" in text
