"""The command line, the run directory, the offline W&B run, and the report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from benchmark.cli import main as cli_main
from benchmark.grid import CONFIG_DIR, config_stack
from benchmark.report import build_report, load_runs
from benchmark.tracking import read_offline_run, resolve_wandb_mode

REPO = Path(__file__).resolve().parents[2]


def _env(**extra):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **extra}
    env.pop("WANDB_MODE", None)
    return env


def _cli(args, cwd, **env):
    return subprocess.run([sys.executable, "-m", "benchmark", *args], cwd=cwd, env=_env(**env), capture_output=True, text=True, timeout=600)


def test_top_level_help_lists_the_commands(capsys):
    assert cli_main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("fit", "validate", "run", "report", "noise", "convex"):
        assert f"  {command} " in out


def test_unknown_command_is_an_error(capsys):
    assert cli_main(["train"]) == 2
    assert "unknown command 'train'" in capsys.readouterr().err


def test_fit_help_explains_the_suite_options(tmp_path):
    result = _cli(["fit", "--help"], tmp_path)
    assert result.returncode == 0, result.stderr
    for option in ("--run.dir", "--run.wandb", "--optimizer_stats", "--run_summary.export_weights", "--seed_everything"):
        assert option in result.stdout


@pytest.mark.parametrize(
    "override, message",
    [
        (["--model.init_args.optimizer", "lamb"], "Unknown optimizer 'lamb'; available: adam"),
        (["--trainer.gradient_clip_val", "1.0"], "Double clipping: trainer.gradient_clip_val=1.0"),
        (["--model.init_args.optimizer_args.lipschitz", "3"], "Unknown keyword(s) 'lipschitz' in optimizer_args"),
        (["--model.init_args.optimizer_args.clip_level", "-1"], "Invalid clip_level: -1"),
        (["--trainer.max_epochs", "many"], "max_epochs"),
        (["--run.wandb", "sometimes"], "Invalid --run.wandb: 'sometimes'"),
    ],
)
def test_bad_config_values_give_readable_errors(tmp_path, embedded_data_root, override, message):
    from datamodules.embedded.store import ENV_VAR

    stack = [a for p in config_stack("imagenet", "clipped_sstm", "bench") for a in ("--config", str(p))]
    args = ["fit", *stack, "--trainer.max_steps", "1", "--run.wandb", "disabled", *override]
    result = _cli(args, tmp_path, **{ENV_VAR: str(embedded_data_root)})
    assert result.returncode != 0
    assert message in result.stderr, result.stderr[-3000:]
    assert "Traceback" not in result.stderr


def test_resolve_wandb_mode(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    assert resolve_wandb_mode("auto") == "offline"  # no credentials: never tries the network
    monkeypatch.setenv("WANDB_MODE", "dryrun")
    assert resolve_wandb_mode("auto") == "offline"
    assert resolve_wandb_mode("disabled") == "disabled"
    with pytest.raises(ValueError, match="Invalid wandb mode: 'sometimes'"):
        resolve_wandb_mode("sometimes")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, embedded_data_root):
    """One real CLI run on the embedded ImageNet-like data, W&B offline."""
    cwd = tmp_path_factory.mktemp("cli")
    stack = [a for p in config_stack("imagenet", "clipped_sstm", "bench") for a in ("--config", str(p))]
    args = [
        "fit", *stack,
        "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "4", "--trainer.limit_val_batches", "2",
        "--trainer.log_every_n_steps", "1", "--trainer.enable_progress_bar", "false", "--trainer.accumulate_grad_batches", "2",
        "--data.init_args.train_crop_size", "32", "--data.init_args.val_resize_size", "36", "--data.init_args.val_crop_size", "32",
        "--run.wandb", "offline", "--ckpt_path", "last",
    ]
    from datamodules.embedded.store import ENV_VAR

    result = _cli(args, cwd, **{ENV_VAR: str(embedded_data_root)})
    assert result.returncode == 0, result.stderr[-4000:]
    return cwd / "runs" / "imagenet" / "clipped_sstm" / "seed0"


@pytest.mark.embedded
def test_run_directory_layout(finished_run):
    for name in ("final.json", "final_weights.pt", "csv/0/metrics.csv", "csv/0/config.yaml", "checkpoints/last.ckpt", "wandb_run.json"):
        assert (finished_run / name).exists(), name
    final = json.loads((finished_run / "final.json").read_text())
    assert final["optimizer"] == "clipped_sstm" and final["task"] == "classification" and final["seed"] == 0
    assert final["evaluate_at"] == "evaluation_point"
    assert final["bn_recomputed"] is True  # ResNet-18 has BatchNorm and SSTM's y differs from x
    # the tuned embedded setting (benchmark/configs/imagenet/embedded_clipped_sstm.yaml), as configured
    tuned = yaml.safe_load((CONFIG_DIR / "imagenet" / "embedded_clipped_sstm.yaml").read_text())["model"]["init_args"]["optimizer_args"]
    assert final["optimizer_hparams"]["max_ratio"] == tuned["max_ratio"] and final["accumulate_grad_batches"] == 2
    assert 0.0 <= final["metrics"]["val/top1"] <= 1.0


@pytest.mark.embedded
def test_offline_wandb_run_has_the_expected_keys(finished_run):
    runs = sorted((finished_run / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    run = read_offline_run(runs[0])
    assert run.group == "imagenet" and run.name == "clipped_sstm-seed0"
    for key in ("task", "dataset", "optimizer", "optimizer_hparams", "seed", "versions", "device", "evaluate_at"):
        assert key in run.config, key
    assert run.config["cli"]["trainer"]["accumulate_grad_batches"] == 2  # the whole CLI config travels
    keys = set().union(*run.history)
    for key in ("train/loss_step", "optim/grad_norm", "optim/clip_factor", "optim/clipped_fraction", "optim/alpha", "optim/clip_threshold", "optim/lr", "val/top1", "val/top5", "val/evaluate_at_evaluation_point", "val/bn_recomputed"):
        assert key in keys, key
    assert "val/top1" in run.summary


@pytest.mark.embedded
def test_report_from_the_run_and_from_its_offline_wandb_copy(finished_run, tmp_path):
    from_files = load_runs([finished_run])
    from_wandb = load_runs([next((finished_run / "wandb").glob("offline-run-*"))])
    assert from_files[0].metrics["val/top1"] == pytest.approx(from_wandb[0].metrics["val/top1"])
    assert [s for s, _ in from_files[0].loss_curve] == [s for s, _ in from_wandb[0].loss_curve]
    build_report(from_files, tmp_path)
    summary = (tmp_path / "summary.md").read_text()
    assert "| ImCl | ResNet-18 | Top-1 (%) |" in summary
    assert (tmp_path / "imagenet_curves.png").stat().st_size > 1000


def _fake_run(root: Path, dataset, task, optimizer, seed, metrics, losses, vals, primary, segments=1):
    run = root / dataset / optimizer / f"seed{seed}"
    run.mkdir(parents=True)
    final = {"dataset": dataset, "task": task, "optimizer": optimizer, "seed": seed, "primary_metric": primary, "metrics": metrics, "evaluate_at": "evaluation_point"}
    (run / "final.json").write_text(json.dumps(final))
    rows = [(s, f"{l}", "") for s, l in losses] + [(s, "", f"{v}") for s, v in vals]
    per_segment = max(1, len(rows) // segments)
    for k in range(segments):
        part = rows[k * per_segment : (k + 1) * per_segment] if k < segments - 1 else rows[k * per_segment :]
        folder = run / "csv" / str(k)
        folder.mkdir(parents=True)
        lines = ["epoch,step,train/loss_step," + primary] + [f"0,{s},{l},{v}" for s, l, v in part]
        (folder / "metrics.csv").write_text("\n".join(lines) + "\n")
    return run


def test_report_from_fixture_logs(tmp_path):
    runs = tmp_path / "runs"
    for seed, (a, b) in enumerate([(0.50, 0.40), (0.54, 0.42)]):
        _fake_run(runs, "imagenet", "classification", "clipped_sgd", seed, {"val/top1": a, "val/top5": 0.9}, [(0, 2.0), (1, 1.5)], [(1, a)], "val/top1", segments=2)
        _fake_run(runs, "imagenet", "classification", "sgd", seed, {"val/top1": b, "val/top5": 0.8}, [(0, 2.1), (1, 1.7)], [(1, b)], "val/top1")
    _fake_run(runs, "div2k", "super_resolution", "adam", 0, {"val/psnr": 24.5, "val/psnr_bicubic": 23.0}, [(0, 0.1)], [(0, 24.5)], "val/psnr")
    records = load_runs([runs])
    assert len(records) == 5
    results = build_report(records, tmp_path / "out")
    summary = (tmp_path / "out" / "summary.md").read_text()
    row = next(line for line in summary.splitlines() if line.startswith("| ImCl"))
    # Columns follow SGD, Adam, Clipped-SGD, ...; mean ± the 95% t-interval's half-width over
    # the two seeds: t_{0.975,1} = 12.706204736174698 times sd / sqrt(2) = 0.01 (SGD), 0.02.
    # The paired differences (0.10, 0.12) give t = 11 with 1 degree of freedom, two-sided
    # p = 1 - 2 atan(11) / pi = 0.058 > 0.05: no cell is significantly best, none is bold.
    assert row == "| ImCl | ResNet-18 | Top-1 (%) | 41.00 ± 12.71 | — | 52.00 ± 25.41 | — |"
    sr_row = next(line for line in summary.splitlines() if line.startswith("| SupRes"))
    assert sr_row == "| SupRes | SRResNet | val mPSNR (dB) | — | 24.50 | — | 23.00 |"  # last: bicubic
    # the paired difference to SGD: mean 0.11, half-width 12.706 * 0.01 = 0.127
    assert "| ImCl | val/top1 | — | +11.00 [-1.71, 23.71] no detectable difference (n=2) |" in summary
    assert "0.52 ± 0.028 [0.5, 0.54]" in summary  # details: mean ± std [min, max]
    agg = results["aggregate"]["imagenet"]["clipped_sgd"]["val/top1"]
    assert agg["n"] == 2 and agg["min"] == 0.50 and agg["max"] == 0.54
    # Segments of a resumed run are joined into one curve.
    clipped = next(r for r in records if r.optimizer == "clipped_sgd" and r.seed == 0)
    assert [s for s, _ in clipped.loss_curve] == [0, 1]
    assert json.loads((tmp_path / "out" / "results.json").read_text())["plots"] == ["div2k_curves.png", "imagenet_curves.png", "performance_profile.png"]


def test_report_without_runs_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no finished runs under"):
        load_runs([tmp_path])
    with pytest.raises(FileNotFoundError, match="no such run or directory"):
        load_runs([tmp_path / "missing"])


@pytest.mark.slow
@pytest.mark.embedded
def test_grid_skips_finished_runs_and_sets_aside_runs_of_other_settings(tmp_path, embedded_data_root):
    from datamodules.embedded.store import ENV_VAR

    def grid(batches: int):
        args = [
            "run", "--datasets", "imagenet", "--optimizers", "sgd", "--runs-dir", str(tmp_path / "runs"),
            "--out", str(tmp_path / f"report{batches}"), "--wandb", "disabled", "--",
            "--trainer.max_epochs", "1", "--trainer.limit_train_batches", str(batches), "--trainer.limit_val_batches", "1",
            "--data.init_args.train_crop_size", "32", "--data.init_args.val_resize_size", "36",
            "--data.init_args.val_crop_size", "32",
        ]  # fmt: skip
        result = _cli(args, tmp_path, **{ENV_VAR: str(embedded_data_root)})
        assert result.returncode == 0, result.stderr[-3000:]
        return result

    run_dir = tmp_path / "runs" / "imagenet" / "sgd" / "seed0"
    grid(2)
    final = run_dir / "final.json"
    first = final.read_text()
    assert json.loads(first)["global_step"] == 2 and (run_dir / "grid_fingerprint.txt").exists()
    grid(2)  # the same settings: done already, not redone
    assert final.read_text() == first
    result = grid(3)  # other settings: the old run is kept aside, the run starts over
    assert "moved to" in result.stderr
    assert json.loads((tmp_path / "runs" / "imagenet" / "sgd" / "seed0.superseded-1" / "final.json").read_text())["global_step"] == 2
    assert json.loads(final.read_text())["global_step"] == 3
