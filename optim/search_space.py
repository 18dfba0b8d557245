"""Search spaces of the registry entries: what the tuning protocol may vary, and how.

Each registry entry (:class:`optim.factory.OptimizerSpec`) declares, per hyperparameter,
one of the dimensions below. The tuner samples them quasi-randomly; reports print them.
A dimension is data (a frozen dataclass), so a registry table stays a table.

Example::

    search_space = {"lr": LogUniform(1e-4, 1.0), "momentum": Choice((0.0, 0.9))}
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Union

__all__ = ["Choice", "LogUniform", "SearchDim", "Uniform", "describe_space", "validate_space"]


@dataclass(frozen=True)
class LogUniform:
    """A positive number drawn log-uniformly from ``[low, high]`` (learning rates, λ)."""

    low: float
    high: float

    def __post_init__(self) -> None:
        if not (0 < self.low < self.high and math.isfinite(self.high)):
            raise ValueError(f"Invalid LogUniform({self.low!r}, {self.high!r}) (must be 0 < low < high < inf)")

    def __str__(self) -> str:
        return f"log-uniform [{self.low:g}, {self.high:g}]"


@dataclass(frozen=True)
class Uniform:
    """A number drawn uniformly from ``[low, high]`` (momentum, ratios)."""

    low: float
    high: float

    def __post_init__(self) -> None:
        if not (self.low < self.high and math.isfinite(self.low) and math.isfinite(self.high)):
            raise ValueError(f"Invalid Uniform({self.low!r}, {self.high!r}) (must be finite, low < high)")

    def __str__(self) -> str:
        return f"uniform [{self.low:g}, {self.high:g}]"


@dataclass(frozen=True)
class Choice:
    """One of a fixed tuple of values (clipping kinds, on/off switches)."""

    options: tuple[Any, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", tuple(self.options))
        if not self.options:
            raise ValueError("Invalid Choice(()): give at least one option")

    def __str__(self) -> str:
        return "one of {" + ", ".join(map(str, self.options)) + "}"


SearchDim = Union[LogUniform, Uniform, Choice]


def validate_space(space: Mapping[str, Any], accepted: list[str] | None = None, *, owner: str = "") -> None:
    """Raise ``ValueError`` for a dimension of the wrong type or a keyword the optimizer lacks."""
    for name, dim in space.items():
        if not isinstance(dim, (LogUniform, Uniform, Choice)):
            raise ValueError(
                f"Invalid search space for {owner or 'optimizer'}: {name!r} is {dim!r} "
                "(must be LogUniform, Uniform or Choice from optim.search_space)"
            )
        if accepted is not None and name not in accepted:
            raise ValueError(
                f"Invalid search space for {owner or 'optimizer'}: {name!r} is not a keyword of the "
                f"optimizer (accepted: {', '.join(accepted)})"
            )


def describe_space(space: Mapping[str, SearchDim]) -> str:
    """One line, ``lr: log-uniform [1e-4, 1]; momentum: one of {0, 0.9}``."""
    return "; ".join(f"{name}: {dim}" for name, dim in space.items())
