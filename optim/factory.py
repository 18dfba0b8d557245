"""The optimizer registry: every optimizer the suite benchmarks, by name.

A registry entry is data (:class:`OptimizerSpec`): a name, the optimizer class (or a
dotted path to it), a one-line description and the documented defaults. The built-ins
are listed in one table below; third parties call :func:`register_optimizer`, and
installed packages plug in through the entry-point group ``clipbench.optimizers``
(an entry point may load an :class:`OptimizerSpec` or an optimizer class)::

    [options.entry_points]
    clipbench.optimizers =
        lamb = my_package.lamb:Lamb

Unknown names and unknown keywords raise, listing what is valid: nothing is dropped.

Why this module is over 400 lines: most of it is the table of built-in entries, data
(defaults, sources, papers, search spaces) that reads best as one table.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from types import MappingProxyType
from typing import Any, Iterable, Mapping

import torch
from torch.optim import Optimizer

from .search_space import Choice, LogUniform, SearchDim, Uniform, describe_space, validate_space

__all__ = [
    "ENTRY_POINT_GROUP",
    "POLICY_KEYWORDS",
    "OptimizerSpec",
    "build_optimizer",
    "display_names",
    "get_optimizer_spec",
    "list_optimizers",
    "optimizer_table",
    "register_optimizer",
]

ENTRY_POINT_GROUP = "clipbench.optimizers"

#: the keywords of :func:`build_optimizer` that put a clipping policy in front
POLICY_KEYWORDS = ("clip_policy", "clip_policy_args")


@dataclass(frozen=True)
class OptimizerSpec:
    """One registry entry.

    Attributes:
        name: the registry key (lower case, e.g. ``"clipped_sstm"``).
        target: the optimizer class, or its dotted path ``"package.module:Class"``
            (imported on first use).
        description: one line for ``list_optimizers`` and ``--help``.
        defaults: keyword arguments used unless overridden; each says where it comes from
            in ``source``.
        source: where the defaults come from.
        search_space: per hyperparameter, the range the tuning protocol samples
            (:mod:`optim.search_space`); hyperparameters not listed keep their default.
        family: a short grouping for tables (``"baseline"``, ``"clipping"``, ...).
        paper: the reference (authors, venue, year) of the method.
        display_name: the name reports print (``"clipped-SSTM"``); defaults to ``name``.
    """

    name: str
    target: type[Optimizer] | str
    description: str = ""
    defaults: Mapping[str, Any] = field(default_factory=dict)
    source: str = ""
    search_space: Mapping[str, SearchDim] = field(default_factory=dict)
    family: str = ""
    paper: str = ""
    display_name: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "defaults", MappingProxyType(dict(self.defaults)))
        validate_space(self.search_space, owner=self.name)
        object.__setattr__(self, "search_space", MappingProxyType(dict(self.search_space)))
        if not self.display_name:
            object.__setattr__(self, "display_name", self.name)

    def resolve(self) -> type[Optimizer]:
        """The optimizer class (imports a dotted path)."""
        if not isinstance(self.target, str):
            return self.target
        module_name, _, attr = self.target.replace(":", ".").rpartition(".")
        try:
            return getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as err:
            raise ImportError(f"optimizer {self.name!r}: cannot import {self.target!r} ({err})") from err

    def accepted_keywords(self) -> list[str]:
        """Keyword arguments the optimizer's constructor takes (besides ``params``), and
        ``clip_policy``/``clip_policy_args`` (:func:`build_optimizer` puts a clipping
        policy in front) unless the entry already is a policy pair."""
        cls = self.resolve()
        signature = inspect.signature(cls.__init__)
        names = [
            name
            for name, p in signature.parameters.items()
            if name not in ("self", "params") and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]
        from .policy_optimizer import ClipPolicyOptimizer

        if not (inspect.isclass(cls) and issubclass(cls, ClipPolicyOptimizer)):
            names += [k for k in POLICY_KEYWORDS if k not in names]
        return names


_BUILTINS = (
    OptimizerSpec(
        "sgd",
        torch.optim.SGD,
        "SGD with heavy-ball momentum (torch.optim.SGD)",
        {"lr": 0.01, "momentum": 0.9},
        "public reference protocol, ImageNet-100 / ResNet-18",
        search_space={"lr": LogUniform(1e-3, 1.0), "momentum": Uniform(0.0, 0.99)},
        family="baseline",
        paper="Robbins & Monro 1951; Polyak 1964 (heavy ball)",
        display_name="SGD",
    ),
    OptimizerSpec(
        "adam",
        torch.optim.Adam,
        "Adam (torch.optim.Adam)",
        {"lr": 1e-3},
        "public reference protocol, ImageNet-100 / ResNet-18",
        search_space={"lr": LogUniform(1e-5, 1e-1)},
        family="baseline",
        paper="Kingma & Ba, ICLR 2015",
        display_name="Adam",
    ),
    OptimizerSpec(
        "adamw",
        torch.optim.AdamW,
        "AdamW, decoupled weight decay (torch.optim.AdamW)",
        {"lr": 1e-3, "weight_decay": 1e-2},
        "torch defaults",
        search_space={"lr": LogUniform(1e-5, 1e-1), "weight_decay": LogUniform(1e-4, 1e-1)},
        family="baseline",
        paper="Loshchilov & Hutter, ICLR 2019",
        display_name="AdamW",
    ),
    OptimizerSpec(
        "clipped_sgd",
        "optim.clipped_sgd:ClippedSGD",
        "clipped-SGD (Gorbunov et al. 2020, Alg. 2) with momentum",
        {"lr": 0.05, "clip_level": 0.1, "momentum": 0.9, "clipping": "coordinate_wise"},
        "public reference protocol, ImageNet-100 / ResNet-18",
        search_space={
            "lr": LogUniform(1e-3, 1.0),
            "clip_level": LogUniform(1e-2, 10.0),
            "momentum": Uniform(0.0, 0.99),
            "clipping": Choice(("norm", "coordinate_wise")),
        },
        family="clipping",
        paper="Gorbunov, Danilova & Gasnikov, NeurIPS 2020 (Alg. 2)",
        display_name="clipped-SGD",
    ),
    OptimizerSpec(
        "clipped_sstm",
        "optim.clipped_sstm:ClippedSSTM",
        "clipped-SSTM, accelerated (Gorbunov et al. 2020, Alg. 1)",
        {"lr": 0.01, "L": 10.0, "clip_level": 1.0, "nu": 1.0, "max_ratio": 0.99, "clipping": "norm"},
        "public reference protocol, ImageNet-100 / ResNet-18 (a = 100)",
        search_space={
            "lr": LogUniform(1e-3, 1.0),
            "L": LogUniform(1.0, 100.0),
            "clip_level": LogUniform(1e-2, 10.0),
            "max_ratio": Uniform(0.9, 0.999),
        },
        family="clipping",
        paper="Gorbunov, Danilova & Gasnikov, NeurIPS 2020 (Alg. 1)",
        display_name="clipped-SSTM",
    ),
    OptimizerSpec(
        "nsgdm",
        "optim.nsgdm:NSGDM",
        "normalized SGD with momentum, optionally clipped (clip_level = inf: unclipped)",
        {"lr": 0.1, "momentum": 0.9, "clip_level": float("inf"), "normalize": "global"},
        "beta = 0.9 as in Cutkosky & Mehta 2020; lr = 0.1 (the SGD protocol's rate: with global "
        "normalization it is the length of every step); clipping off as in the 2020 method",
        search_space={
            "lr": LogUniform(1e-3, 1.0),
            "momentum": Uniform(0.5, 0.99),
            "clip_level": LogUniform(1e-2, 100.0),
            "normalize": Choice(("global", "layer_wise")),
        },
        family="normalized",
        paper="Cutkosky & Mehta, ICML 2020; with clipping: Cutkosky & Mehta, NeurIPS 2021",
        display_name="NSGD-M",
    ),
    OptimizerSpec(
        "clipped_adam",
        "optim.clipped_adam:ClippedAdam",
        "clip the gradient (global norm), then exactly AdamW",
        {"lr": 1e-3, "clip_level": 1.0, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 1e-2},
        "AdamW's torch defaults; clip_level = 1.0, the level of clip_grad_norm_ in common "
        "Adam recipes (Chezhegov et al. 2025 tune it)",
        search_space={
            "lr": LogUniform(1e-5, 1e-1),
            "clip_level": LogUniform(1e-2, 10.0),
            "weight_decay": LogUniform(1e-4, 1e-1),
        },
        family="clipping",
        paper="Chezhegov et al., ICML 2025 (clipped Adam)",
        display_name="clipped-Adam",
    ),
    OptimizerSpec(
        "sgd_autoclip",
        "optim.policy_optimizer:SGDAutoClip",
        "SGD with momentum behind AutoClip (clip at the 10th percentile of all past norms)",
        {"lr": 0.01, "momentum": 0.9, "percentile": 10.0},
        "SGD: the sgd entry's protocol; percentile p = 10 and the whole history: Seetharaman et al. 2020",
        search_space={"lr": LogUniform(1e-3, 1.0), "momentum": Uniform(0.0, 0.99), "percentile": Uniform(1.0, 50.0)},
        family="adaptive clipping",
        paper="Seetharaman, Wichern, Pardo & Le Roux, MLSP 2020 (AutoClip)",
        display_name="SGD+AutoClip",
    ),
    OptimizerSpec(
        "sgd_zclip",
        "optim.policy_optimizer:SGDZClip",
        "SGD with momentum behind ZClip (z-score spike clipping against an EMA)",
        {"lr": 0.01, "momentum": 0.9, "warmup_steps": 25, "z_threshold": 2.5, "ema_alpha": 0.97},
        "SGD: the sgd entry's protocol; W = 25, z_t = 2.5, a = 0.97: Kumar et al. 2025",
        search_space={
            "lr": LogUniform(1e-3, 1.0),
            "momentum": Uniform(0.0, 0.99),
            "z_threshold": Uniform(1.5, 3.5),
            "ema_alpha": Uniform(0.9, 0.99),
        },
        family="adaptive clipping",
        paper="Kumar et al., arXiv 2025 (ZClip)",
        display_name="SGD+ZClip",
    ),
    OptimizerSpec(
        "adamw_autoclip",
        "optim.policy_optimizer:AdamWAutoClip",
        "AdamW behind AutoClip (clip at the 10th percentile of all past norms)",
        {"lr": 1e-3, "weight_decay": 1e-2, "percentile": 10.0},
        "AdamW: torch defaults; p = 10 and the whole history: Seetharaman et al. 2020",
        search_space={"lr": LogUniform(1e-5, 1e-1), "weight_decay": LogUniform(1e-4, 1e-1), "percentile": Uniform(1.0, 50.0)},
        family="adaptive clipping",
        paper="Seetharaman, Wichern, Pardo & Le Roux, MLSP 2020 (AutoClip)",
        display_name="AdamW+AutoClip",
    ),
    OptimizerSpec(
        "adamw_zclip",
        "optim.policy_optimizer:AdamWZClip",
        "AdamW behind ZClip (z-score spike clipping against an EMA)",
        {"lr": 1e-3, "weight_decay": 1e-2, "warmup_steps": 25, "z_threshold": 2.5, "ema_alpha": 0.97},
        "AdamW: torch defaults; W = 25, z_t = 2.5, a = 0.97: Kumar et al. 2025",
        search_space={
            "lr": LogUniform(1e-5, 1e-1),
            "weight_decay": LogUniform(1e-4, 1e-1),
            "z_threshold": Uniform(1.5, 3.5),
            "ema_alpha": Uniform(0.9, 0.99),
        },
        family="adaptive clipping",
        paper="Kumar et al., arXiv 2025 (ZClip)",
        display_name="AdamW+ZClip",
    ),
    OptimizerSpec(
        "sgd_agc",
        "optim.policy_optimizer:SGDAGC",
        "SGD with momentum behind unit-wise adaptive gradient clipping (AGC)",
        {"lr": 0.01, "momentum": 0.9, "clipping_ratio": 0.01, "unit_eps": 1e-3},
        "SGD: the sgd entry's protocol; c = 0.01, eps = 1e-3: Brock et al. 2021 (NFNets, batch 4096)",
        search_space={
            "lr": LogUniform(1e-3, 1.0),
            "momentum": Uniform(0.0, 0.99),
            "clipping_ratio": LogUniform(1e-3, 1e-1),
        },
        family="adaptive clipping",
        paper="Brock, De, Smith & Simonyan, ICML 2021 (AGC)",
        display_name="SGD+AGC",
    ),
    OptimizerSpec(
        "muon",
        "optim.muon:MuonAdamW",
        "Muon (torch.optim.Muon) on the 2-D weights, AdamW on the rest",
        {"lr": 1e-3, "weight_decay": 0.1, "momentum": 0.95, "nesterov": True, "adjust_lr_fn": "match_rms_adamw"},
        "torch.optim.Muon's defaults, with the AdamW-matched update RMS and weight decay 0.1 of "
        "Liu et al. 2025, so one lr serves both parts",
        search_space={"lr": LogUniform(1e-4, 1e-1), "weight_decay": LogUniform(1e-3, 0.3)},
        family="baseline",
        paper="Jordan et al. 2024 (Muon); Liu et al., arXiv:2502.16982, 2025",
        display_name="Muon",
    ),
    OptimizerSpec(
        "lion",
        "lion_pytorch:Lion",
        "Lion, sign momentum (the lion-pytorch package)",
        {"lr": 1e-4, "betas": (0.9, 0.99), "weight_decay": 0.1},
        "Chen et al. 2023: betas (0.9, 0.99); lr 10x smaller and weight decay 10x larger than AdamW's",
        search_space={"lr": LogUniform(1e-5, 1e-2), "weight_decay": LogUniform(1e-3, 1.0)},
        family="baseline",
        paper="Chen et al., NeurIPS 2023 (Symbolic discovery of optimization algorithms)",
        display_name="Lion",
    ),
)

_REGISTRY: dict[str, OptimizerSpec] = {spec.name: spec for spec in _BUILTINS}
_plugins_loaded = False


def register_optimizer(
    name: str | OptimizerSpec,
    target: type[Optimizer] | str | None = None,
    description: str = "",
    defaults: Mapping[str, Any] | None = None,
    source: str = "",
    *,
    overwrite: bool = False,
    **fields: Any,
) -> OptimizerSpec:
    """Add an optimizer to the registry (or pass a ready :class:`OptimizerSpec`).

    Raises:
        ValueError: the name is taken (pass ``overwrite=True`` to replace it), or no
            target was given.
    """
    if isinstance(name, OptimizerSpec):
        spec = name
    else:
        if target is None:
            raise ValueError(f"register_optimizer({name!r}): give the optimizer class or its dotted path")
        spec = OptimizerSpec(name, target, description, defaults or {}, source, **fields)
    key = spec.name.lower()
    if key in _REGISTRY and not overwrite and _REGISTRY[key] != spec:
        raise ValueError(f"optimizer {key!r} is already registered; pass overwrite=True to replace it")
    _REGISTRY[key] = spec
    return spec


def _load_plugins() -> None:
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        obj = ep.load()
        if isinstance(obj, OptimizerSpec):
            register_optimizer(obj, overwrite=True)
        elif inspect.isclass(obj) and issubclass(obj, Optimizer):
            doc = (inspect.getdoc(obj) or "").split("\n")[0]
            register_optimizer(ep.name, obj, doc, source=f"entry point {ep.value}", overwrite=True)
        else:
            raise TypeError(
                f"entry point {ep.name} = {ep.value} in group {ENTRY_POINT_GROUP!r} must load an "
                f"OptimizerSpec or a torch.optim.Optimizer subclass, got {type(obj).__name__}"
            )


def reload_plugins() -> None:
    """Re-read the entry points (after installing a plugin in a running process)."""
    global _plugins_loaded
    _plugins_loaded = False
    _load_plugins()


def list_optimizers() -> list[str]:
    """The registered names, sorted."""
    _load_plugins()
    return sorted(_REGISTRY)


def display_names() -> dict[str, str]:
    """``name -> display_name`` for reports, in table order (built-ins first, as listed)."""
    _load_plugins()
    return {name: spec.display_name for name, spec in _REGISTRY.items()}


def get_optimizer_spec(name: str) -> OptimizerSpec:
    """The registry entry for ``name``.

    Raises:
        ValueError: unknown name; the message lists the registered ones.
    """
    _load_plugins()
    key = name.lower() if isinstance(name, str) else name
    if key not in _REGISTRY:
        raise ValueError(f"Unknown optimizer {name!r}; available: {', '.join(list_optimizers())}")
    return _REGISTRY[key]


def build_optimizer(name: str, params: Iterable[Any], **overrides: Any) -> Optimizer:
    """Instantiate a registered optimizer: its defaults, updated by ``overrides``.

    Args:
        name: a name from :func:`list_optimizers`.
        params: parameters or parameter groups, as for any torch optimizer.
        **overrides: constructor keywords; and ``clip_policy`` (``"autoclip"``,
            ``"zclip"``, ``"agc"``) with ``clip_policy_args`` (a dict of the policy's
            keywords, plus ``nonfinite``) to run that policy in front of the optimizer
            (:class:`optim.policy_optimizer.ClipPolicyOptimizer`).

    Raises:
        ValueError: unknown name, or a keyword the optimizer does not take (named, with
            the accepted ones listed); invalid values raise the optimizer's own error.
    """
    spec = get_optimizer_spec(name)
    accepted = spec.accepted_keywords()
    unknown = sorted(set(overrides) - set(accepted))
    if unknown:
        raise ValueError(
            f"Unknown keyword(s) {', '.join(map(repr, unknown))} for optimizer {spec.name!r}; "
            f"accepted: {', '.join(accepted)}"
        )
    kwargs = {**spec.defaults, **overrides}
    policy = kwargs.pop("clip_policy", None)
    policy_args = dict(kwargs.pop("clip_policy_args", None) or {})
    if policy is None:
        if policy_args:
            raise ValueError(f"clip_policy_args {sorted(policy_args)} given without a clip_policy")
        return spec.resolve()(params, **kwargs)
    from .policies import make_policy
    from .policy_optimizer import ClipPolicyOptimizer

    nonfinite = policy_args.pop("nonfinite", "skip")
    made = make_policy(policy, **policy_args)
    return ClipPolicyOptimizer(spec.resolve()(params, **kwargs), made, nonfinite=nonfinite)


def optimizer_table(names: Iterable[str] | None = None) -> str:
    """The registry as a text table: name, family, paper, defaults, search space."""
    rows = [("name", "family", "paper", "defaults", "search space")]
    for key in names if names is not None else list_optimizers():
        spec = get_optimizer_spec(key)
        defaults = ", ".join(f"{k}={v}" for k, v in spec.defaults.items())
        rows.append((spec.name, spec.family, spec.paper, defaults, describe_space(spec.search_space)))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:4], widths)) + "  " + r[4] for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(line.rstrip() for line in lines)
