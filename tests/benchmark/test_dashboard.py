"""The W&B workspaces, built and inspected offline (nothing is saved)."""

from __future__ import annotations

import pytest

from benchmark.cli import main as cli_main
from benchmark.dashboard import STEP, build_workspaces


def test_one_workspace_per_task_with_the_panels():
    workspaces = build_workspaces("me", "clipbench", ["imagenet", "voc"])
    assert [w.name for w in workspaces] == ["clipbench: imagenet", "clipbench: voc"]
    imagenet = workspaces[0]
    assert (imagenet.entity, imagenet.project) == ("me", "clipbench")
    metrics = [s.panels[0].y[0] for s in imagenet.sections]
    assert metrics == ["val/top1", "train/loss_step", "optim/clipped_fraction", "noise/alpha"]
    assert workspaces[1].sections[0].panels[0].y == ["val/miou"]
    for section in imagenet.sections:
        (plot,) = section.panels
        assert plot.x == STEP
        assert (plot.groupby, plot.groupby_aggfunc, plot.groupby_rangefunc) == ("optimizer", "mean", "minmax")
    assert imagenet.sections[1].panels[0].log_y is True  # the loss on a log axis
    # only this task's runs, grouped by optimizer
    settings = imagenet.runset_settings
    assert settings.filters == "Config(\"dataset\") == 'imagenet'"
    assert [g.name for g in settings.groupby] == ["optimizer"]


def test_bad_arguments():
    with pytest.raises(ValueError, match="Invalid W&B path"):
        build_workspaces("", "p")
    with pytest.raises(ValueError, match="Invalid dataset"):
        build_workspaces("me", "p", ["mnist"])
    with pytest.raises(ValueError, match="Invalid band"):
        build_workspaces("me", "p", band="iqr")


def test_command_prints_offline_and_refuses_to_save_offline(capsys, monkeypatch, tmp_path):
    assert cli_main(["dashboard", "--entity", "me", "--datasets", "div2k", "--print"]) == 0
    out = capsys.readouterr().out
    assert "clipbench: div2k (me/clipbench, grouped by optimizer): validation metric: val/psnr" in out
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert cli_main(["dashboard", "--entity", "me"]) == 2
    assert "W&B is not online" in capsys.readouterr().err
