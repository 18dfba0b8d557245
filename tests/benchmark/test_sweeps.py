"""Every sweep parses, every optimizer's search space is accepted by the task, and the
command a W&B agent would launch trains (one step, one run per dataset)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from benchmark.grid import DATASETS
from benchmark.lightning_cli import ClipbenchCLI
from benchmark.sweep import load_sweep, sweep_config
from benchmark.tasks import get_task

pytestmark = [
    pytest.mark.embedded,
    pytest.mark.filterwarnings("ignore:LightningCLI's args parameter is intended to run from within Python"),
]


def _sample(spec: dict):
    """A value from a W&B parameter spec, as an agent could draw it."""
    if "value" in spec:
        return spec["value"]
    if "values" in spec:
        return spec["values"][-1]
    return (spec["min"] * spec["max"]) ** 0.5  # log_uniform_values: the geometric middle


def _agent_command(config: dict, extra: list[str]) -> list[str]:
    args = [f"--{name}={_sample(spec)}" for name, spec in config["parameters"].items()]
    command = []
    for part in config["command"]:
        if part == "${env}":
            continue
        command += {"${interpreter}": [sys.executable], "${args}": [*extra, *args]}.get(part, [part])
    return command


SMALL = ["--trainer.max_steps=1", "--trainer.limit_val_batches=1", "--run.wandb=disabled", "--trainer.accelerator=cpu"]


@pytest.mark.parametrize("dataset", DATASETS)
def test_every_search_space_is_accepted(dataset, tmp_path, monkeypatch, embedded_data_root):
    spec = load_sweep(dataset)
    task = get_task(dataset)
    # The sweep optimises the task's primary metric in its direction (bpc: minimise).
    assert spec["metric"] == {"name": task.primary_metric, "goal": "maximize" if task.higher_is_better else "minimize"}
    assert set(spec["optimizers"]) == {"sgd", "adam", "clipped_sgd", "clipped_sstm"}
    monkeypatch.chdir(tmp_path)
    for optimizer in spec["optimizers"]:
        config = sweep_config(dataset, optimizer, preset="bench")
        command = _agent_command(config, SMALL)
        fit_args = command[command.index("fit") + 1 :]  # run=False: no subcommand
        # Parse and build model, data and trainer (the optimizer's keywords are checked
        # when the task is built), without training.
        cli = ClipbenchCLI(args=fit_args, run=False)
        assert cli.model.optimizer_name == optimizer
        for name, param in config["parameters"].items():
            if name.startswith("model.init_args.optimizer_args."):
                key = name.rsplit(".", 1)[1]
                assert cli.model.optimizer_args[key] == pytest.approx(_sample(param)), (optimizer, key)


@pytest.mark.slow
@pytest.mark.parametrize("dataset, optimizer", [("imagenet", "clipped_sstm"), ("voc", "clipped_sgd"), ("div2k", "adam")])
def test_the_agent_command_trains_one_step(dataset, optimizer, tmp_path, embedded_data_root):
    from datamodules.embedded.store import ENV_VAR

    command = _agent_command(sweep_config(dataset, optimizer, preset="bench"), SMALL + ["--run_summary.export_weights=false"])
    env = {**os.environ, ENV_VAR: str(embedded_data_root)}
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    finals = list(tmp_path.glob(f"runs/{dataset}/{optimizer}/seed0/final.json"))
    assert finals, result.stderr[-2000:]
    import json

    final = json.loads(finals[0].read_text())
    assert final["global_step"] == 1 and final["hparams_identical_across_ranks"] is True


@pytest.mark.parametrize("dataset", DATASETS)
@pytest.mark.parametrize("optimizer", ["sgd", "adam", "clipped_sgd", "clipped_sstm"])
def test_bench_overrides_keep_every_optimizer_argument(dataset, optimizer):
    """A later fragment's ``optimizer_args`` replaces the earlier dict (jsonargparse does not
    merge dicts), so a tuned ``embedded_<optimizer>.yaml`` must restate every argument:
    otherwise momentum, weight decay or the clipping kind silently fall back to defaults."""
    import yaml

    from benchmark.grid import config_stack

    def optimizer_args(path):
        return (yaml.safe_load(path.read_text()) or {}).get("model", {}).get("init_args", {}).get("optimizer_args")

    full = config_stack(dataset, optimizer, "full")
    base = next(a for a in map(optimizer_args, reversed(full)) if a is not None)
    bench = next(a for a in map(optimizer_args, reversed(config_stack(dataset, optimizer, "bench"))) if a is not None)
    assert set(base) <= set(bench), f"{dataset}/{optimizer}: the bench config drops {sorted(set(base) - set(bench))}"
