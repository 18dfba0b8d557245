"""The optimizer registry: every optimizer the suite benchmarks, by name.

A registry entry is data (:class:`OptimizerSpec`): a name, the optimizer class (or a
dotted path to it), a one-line description and the documented defaults. The built-ins
are listed in one table below; third parties call :func:`register_optimizer`, and
installed packages plug in through the entry-point group ``clipbench.optimizers``
(an entry point may load an :class:`OptimizerSpec` or an optimizer class)::

    [options.entry_points]
    clipbench.optimizers =
        lion = my_package.lion:Lion

Unknown names and unknown keywords raise, listing what is valid: nothing is dropped.
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

from .search_space import Choice, LogUniform, SearchDim, Uniform, validate_space

__all__ = [
    "ENTRY_POINT_GROUP",
    "OptimizerSpec",
    "build_optimizer",
    "get_optimizer_spec",
    "list_optimizers",
    "register_optimizer",
]

ENTRY_POINT_GROUP = "clipbench.optimizers"


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
        """Keyword arguments the optimizer's constructor takes (besides ``params``)."""
        signature = inspect.signature(self.resolve().__init__)
        return [
            name
            for name, p in signature.parameters.items()
            if name not in ("self", "params") and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]


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
        **overrides: constructor keywords.

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
    return spec.resolve()(params, **kwargs)
