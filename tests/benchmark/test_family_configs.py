"""Every heavy-tail family entry has a config fragment per task that builds its optimizer."""

from __future__ import annotations

import pytest
import torch
import yaml

from benchmark.grid import CONFIG_DIR, config_stack
from optim import build_optimizer, get_optimizer_spec

FAMILY = ["nsgdm", "clipped_adam", "sgd_autoclip", "sgd_zclip", "adamw_autoclip", "adamw_zclip", "sgd_agc", "muon", "lion"]


@pytest.mark.parametrize("dataset", ["imagenet", "voc", "div2k"])
@pytest.mark.parametrize("name", FAMILY)
def test_fragment_names_the_entry_states_its_source_and_builds(dataset, name):
    path = CONFIG_DIR / dataset / f"{name}.yaml"
    text = path.read_text()
    assert text.startswith("# "), f"{path}: state where the defaults come from in a comment"
    init = yaml.safe_load(text)["model"]["init_args"]
    assert init["optimizer"] == name
    args = dict(init["optimizer_args"])
    spec = get_optimizer_spec(name)
    assert set(args) <= set(spec.accepted_keywords()), sorted(set(args) - set(spec.accepted_keywords()))
    assert config_stack(dataset, name, "bench")[3] == path
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(2))
    net(torch.zeros(1, 3, 5, 5))
    weight_decay = args.pop("weight_decay", 0.0)  # the task modules put it in the parameter groups
    groups = [{"params": [p for p in net.parameters() if p.ndim > 1], "weight_decay": weight_decay},
              {"params": [p for p in net.parameters() if p.ndim <= 1], "weight_decay": 0.0}]  # fmt: skip
    opt = build_optimizer(name, groups, **args)
    net(torch.randn(2, 3, 5, 5)).sum().backward()
    opt.step()


def test_optimizers_command_prints_the_registry_table(capsys):
    from benchmark.cli import main
    from optim import list_optimizers

    assert main(["optimizers"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:2] == ["name", "family"] and "search space" in lines[0]
    rows = {line.split()[0]: line for line in lines[2:]}
    assert set(rows) == set(list_optimizers())
    assert "Cutkosky & Mehta" in rows["nsgdm"] and "lr: log-uniform [0.001, 1]" in rows["nsgdm"]
    assert "percentile=10.0" in rows["sgd_autoclip"]
    assert main(["optimizers", "lion", "--describe"]) == 0
    assert "lion-pytorch" in capsys.readouterr().out
    assert main(["optimizers", "lamb"]) == 2  # unknown: the CLI's error, listing the valid names
    assert "Unknown optimizer 'lamb'; available: adam" in capsys.readouterr().err
