"""The same command twice on the same machine gives identical metrics (final.json)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from benchmark.grid import config_stack

pytestmark = pytest.mark.embedded


def _fit(run_dir, embedded_data_root):
    from datamodules.embedded.store import ENV_VAR

    stack = [a for p in config_stack("imagenet", "clipped_sstm", "bench") for a in ("--config", str(p))]
    args = [
        sys.executable, "-m", "benchmark", "fit", *stack, "--seed_everything", "1",
        "--trainer.max_epochs", "2", "--trainer.limit_train_batches", "3", "--trainer.limit_val_batches", "1",
        "--trainer.accumulate_grad_batches", "1", "--trainer.val_check_interval", "1.0", "--trainer.enable_progress_bar", "false",
        "--data.init_args.train_crop_size", "32", "--data.init_args.val_resize_size", "36", "--data.init_args.val_crop_size", "32",
        "--run.wandb", "disabled", "--run.dir", str(run_dir),
    ]  # fmt: skip
    env = {**os.environ, ENV_VAR: str(embedded_data_root), "PYTHONUNBUFFERED": "1"}
    result = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((run_dir / "final.json").read_text())


def test_two_runs_give_identical_metrics(tmp_path, embedded_data_root):
    first, second = (_fit(tmp_path / name, embedded_data_root) for name in ("a", "b"))
    assert first["metrics"], "the run recorded no metrics"
    # byte for byte: the JSON text of the metrics, not a tolerance
    assert json.dumps(first["metrics"], sort_keys=True) == json.dumps(second["metrics"], sort_keys=True)
    assert first["optimizer_stats"] == second["optimizer_stats"]
    # the validation history: one entry per epoch, the same steps and values, wall times increasing
    for final in (first, second):
        history = final["val_history"]
        assert [h["step"] for h in history] == [3, 6]
        assert history[0]["seconds"] < history[1]["seconds"] <= final["train_seconds"] + 1e-6
        assert history[-1]["value"] == final["metrics"]["val/top1"]
    assert [h["value"] for h in first["val_history"]] == [h["value"] for h in second["val_history"]]
