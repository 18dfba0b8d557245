"""Invalid hyperparameters, and the optimizer registry with its plugin entry point."""

from __future__ import annotations

import importlib
import textwrap

import pytest
import torch

import optim.factory as factory
from optim import ClippedSGD, ClippedSSTM, OptimizerSpec, build_optimizer, get_optimizer_spec, list_optimizers, register_optimizer

SGD_OK = dict(lr=0.1, clip_level=1.0)
SSTM_OK = dict(lr=0.1, L=1.0, clip_level=1.0)


@pytest.mark.parametrize(
    "cls, base, key, value, allowed",
    [
        (ClippedSGD, SGD_OK, "lr", 0.0, "> 0"),
        (ClippedSGD, SGD_OK, "lr", -1.0, "> 0"),
        (ClippedSGD, SGD_OK, "lr", float("nan"), "> 0"),
        (ClippedSGD, SGD_OK, "clip_level", 0.0, "> 0, inf allowed"),
        (ClippedSGD, SGD_OK, "momentum", 1.0, "[0, 1)"),
        (ClippedSGD, SGD_OK, "momentum", -0.1, "[0, 1)"),
        (ClippedSGD, SGD_OK, "weight_decay", -1e-4, "[0, inf)"),
        (ClippedSGD, SGD_OK, "clipping", "global", "'norm', 'layer_wise', 'coordinate_wise'"),
        (ClippedSGD, SGD_OK, "nonfinite", "ignore", "'skip', 'raise'"),
        (ClippedSGD, SGD_OK, "average", "yes", "True or False"),
        (ClippedSSTM, SSTM_OK, "lr", 0.0, "> 0"),
        (ClippedSSTM, SSTM_OK, "L", 0.0, "> 0"),
        (ClippedSSTM, SSTM_OK, "L", float("inf"), "> 0 and finite"),
        (ClippedSSTM, SSTM_OK, "clip_level", -1.0, "> 0"),
        (ClippedSSTM, SSTM_OK, "nu", 1.5, "[0, 1]"),
        (ClippedSSTM, SSTM_OK, "nu", -0.5, "[0, 1]"),
        (ClippedSSTM, SSTM_OK, "max_ratio", 0.0, "(0, 1]"),
        (ClippedSSTM, SSTM_OK, "max_ratio", 1.01, "(0, 1]"),
        (ClippedSSTM, SSTM_OK, "clipping", "per_tensor", "'norm', 'layer_wise', 'coordinate_wise'"),
        (ClippedSSTM, SSTM_OK, "nonfinite", "warn", "'skip', 'raise'"),
        (ClippedSSTM, SSTM_OK, "weight_decay", -1.0, "[0, inf)"),
    ],
)
def test_invalid_hyperparameters_name_argument_value_and_range(cls, base, key, value, allowed):
    params = [torch.nn.Parameter(torch.zeros(2))]
    with pytest.raises(ValueError) as err:
        cls(params, **{**base, key: value})
    message = str(err.value)
    assert message.startswith(f"Invalid {key}: {value!r}")
    assert allowed in message


def test_global_hyperparameters_must_agree_across_groups():
    a, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    with pytest.raises(ValueError, match="Invalid clip_level: parameter groups disagree"):
        ClippedSGD([{"params": [a]}, {"params": [b], "clip_level": 2.0}], lr=0.1, clip_level=1.0)
    with pytest.raises(ValueError, match="Invalid L: parameter groups disagree"):
        ClippedSSTM([{"params": [a]}, {"params": [b], "L": 2.0}], **SSTM_OK)
    # Per-group lr/momentum/weight_decay are fine for clipped-SGD.
    ClippedSGD([{"params": [a], "lr": 0.5, "weight_decay": 0.0}, {"params": [b], "momentum": 0.9}], **SGD_OK)
    # A scheduler writing different lrs into SSTM groups is caught at the next step.
    opt = ClippedSSTM([{"params": [a]}, {"params": [b]}], **SSTM_OK)
    opt.param_groups[1]["lr"] = 0.5
    a.grad, b.grad = torch.ones(2), torch.ones(2)
    with pytest.raises(ValueError, match="Invalid lr: parameter groups disagree"):
        opt.step()


def test_registry_builtins_and_defaults():
    names = list_optimizers()
    assert {"sgd", "adam", "adamw", "clipped_sgd", "clipped_sstm"} <= set(names)
    params = [torch.nn.Parameter(torch.zeros(3))]
    sstm = build_optimizer("clipped_sstm", params)
    assert isinstance(sstm, ClippedSSTM)
    group = sstm.param_groups[0]
    assert (group["lr"], group["L"], group["clip_level"], group["max_ratio"]) == (0.01, 10.0, 1.0, 0.99)
    sgd = build_optimizer("clipped_sgd", params, clip_level=0.5)
    assert sgd.param_groups[0]["clip_level"] == 0.5
    assert sgd.param_groups[0]["clipping"] == "coordinate_wise"
    assert isinstance(build_optimizer("SGD", params), torch.optim.SGD)  # case-insensitive
    for name in names:
        spec = get_optimizer_spec(name)
        assert spec.description and spec.source, name


def test_unknown_name_lists_the_available_ones():
    with pytest.raises(ValueError) as err:
        build_optimizer("lamb", [torch.nn.Parameter(torch.zeros(1))])
    assert "Unknown optimizer 'lamb'" in str(err.value)
    for name in ("adam", "clipped_sgd", "clipped_sstm", "sgd"):
        assert name in str(err.value)


def test_unknown_keyword_is_named_not_dropped():
    with pytest.raises(ValueError) as err:
        build_optimizer("clipped_sstm", [torch.nn.Parameter(torch.zeros(1))], lipschitz=3.0, nu=0.5)
    message = str(err.value)
    assert "'lipschitz'" in message and "'nu'" not in message.split("accepted")[0]
    assert "accepted: lr, L, clip_level" in message


def test_register_optimizer(monkeypatch):
    monkeypatch.setattr(factory, "_REGISTRY", dict(factory._REGISTRY))
    spec = register_optimizer("rmsprop", torch.optim.RMSprop, "RMSprop", {"lr": 1e-3}, "torch defaults")
    assert isinstance(spec, OptimizerSpec)
    assert "rmsprop" in list_optimizers()
    assert isinstance(build_optimizer("rmsprop", [torch.nn.Parameter(torch.zeros(1))]), torch.optim.RMSprop)
    with pytest.raises(ValueError, match="already registered"):
        register_optimizer("rmsprop", torch.optim.Adagrad)
    register_optimizer("rmsprop", torch.optim.Adagrad, overwrite=True)
    assert get_optimizer_spec("rmsprop").target is torch.optim.Adagrad
    register_optimizer("by_path", "torch.optim:Adamax", "Adamax by dotted path")
    assert isinstance(build_optimizer("by_path", [torch.nn.Parameter(torch.zeros(1))], lr=0.1), torch.optim.Adamax)
    register_optimizer("broken", "no_such_module:Opt")
    with pytest.raises(ImportError, match="cannot import 'no_such_module:Opt'"):
        build_optimizer("broken", [torch.nn.Parameter(torch.zeros(1))])


def test_entry_point_plugin(tmp_path, monkeypatch):
    """An installed distribution advertising `clipbench.optimizers` shows up by name."""
    (tmp_path / "clipbench_testplugin.py").write_text(
        textwrap.dedent(
            """
            import torch
            from optim import OptimizerSpec

            class PluginSGD(torch.optim.SGD):
                '''A plugin optimizer.'''

            SPEC = OptimizerSpec("plugin_spec", PluginSGD, "from a spec", {"lr": 0.3}, "plugin")
            """
        )
    )
    dist = tmp_path / "clipbench_testplugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: clipbench-testplugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[clipbench.optimizers]\n"
        "plugin_sgd = clipbench_testplugin:PluginSGD\n"
        "plugin_spec = clipbench_testplugin:SPEC\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(factory, "_REGISTRY", dict(factory._REGISTRY))
    importlib.invalidate_caches()
    factory.reload_plugins()
    try:
        assert {"plugin_sgd", "plugin_spec"} <= set(list_optimizers())
        assert get_optimizer_spec("plugin_sgd").description == "A plugin optimizer."
        opt = build_optimizer("plugin_spec", [torch.nn.Parameter(torch.zeros(1))])
        assert type(opt).__name__ == "PluginSGD" and opt.param_groups[0]["lr"] == 0.3
    finally:
        monkeypatch.undo()
        factory.reload_plugins()
    assert "plugin_sgd" not in list_optimizers()


@pytest.mark.parametrize("name", list_optimizers())
def test_search_space_names_keywords_of_the_optimizer(name):
    from optim.search_space import validate_space

    spec = get_optimizer_spec(name)
    validate_space(spec.search_space, spec.accepted_keywords(), owner=name)
    assert spec.display_name


def test_search_space_rejects_bad_dimensions():
    from optim.search_space import Choice, LogUniform, Uniform, describe_space, validate_space

    with pytest.raises(ValueError, match="0 < low < high"):
        LogUniform(0.0, 1.0)
    with pytest.raises(ValueError, match="low < high"):
        Uniform(1.0, 1.0)
    with pytest.raises(ValueError, match="at least one option"):
        Choice(())
    with pytest.raises(ValueError, match="'lr' is not a keyword"):
        validate_space({"lr": LogUniform(1e-3, 1.0)}, ["momentum"], owner="x")
    with pytest.raises(ValueError, match="must be LogUniform"):
        validate_space({"lr": (1e-3, 1.0)})
    assert describe_space({"lr": LogUniform(1e-3, 1.0), "c": Choice(("a", "b"))}) == (
        "lr: log-uniform [0.001, 1]; c: one of {a, b}"
    )
