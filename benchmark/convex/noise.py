"""Gradient-noise distributions with a prescribed variance: light- and heavy-tailed.

Every family here is *elliptical*: ξ = σ · R · u with u uniform on the unit sphere of
R^d and a radial part R ≥ 0 independent of u, scaled so that E R² = 1. Hence
E ξ = 0 and E‖ξ‖² = σ² exactly, whatever the family: only the tails differ, and they
are the tails of ‖ξ‖ = σR, the quantity that norm clipping acts on.

============  ====================================================  ==================
family        radial part R (before scaling to E R² = 1)            P(‖ξ‖ > t) decays
============  ====================================================  ==================
gaussian      ‖Z‖, Z ~ N(0, I_d)  (ξ = σZ/√d: the normal law)        like exp(-t²d/2σ²)
student_t     ‖Z‖·√(ν/V), V ~ χ²_ν  (multivariate Student-t, ν df)   like t^-ν
pareto        X ~ Lomax(α): P(X > s) = (1+s)^-α                      like t^-α
burr          X ~ Burr XII(c=2, k=α/2): P(X > s) = (1+s²)^-k         like t^-α
============  ====================================================  ==================

The tail index (ν or α) must exceed 2: that is exactly finite variance, the only
assumption of the convex theorems. 2 < index ≤ 3 has a finite variance but an
infinite third moment: heavy-tailed in the sense of the paper (not sub-Gaussian).

Cost: the direction needs d normal draws per vector, the radial part one scalar. The
normal draws are made in float32 and cast (CPU ``torch.randn`` in float64 is about four
times slower; the statistics do not care about the last float32 bit). The scalar radial
draws come from a NumPy generator, which has the χ² sampler torch only has privately.

References:
    Gorbunov, Danilova, Gasnikov. Stochastic optimization with heavy-tailed noise via
    accelerated gradient clipping. NeurIPS 2020 (arXiv:2005.10785), Sections 1-2.
    Kotz, Nadarajah. Multivariate t Distributions and Their Applications. CUP, 2004.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.special import beta as beta_function
from torch import Tensor

__all__ = ["NOISE_FAMILIES", "NoiseModel"]

#: family -> default tail index (None: light-tailed, no parameter)
NOISE_FAMILIES: dict[str, float | None] = {
    "gaussian": None,
    "student_t": 2.5,
    "pareto": 2.5,
    "burr": 2.5,
}

_BURR_C = 2.0


@dataclass(frozen=True)
class NoiseModel:
    """Zero-mean noise vectors with E‖ξ‖² = σ² and a chosen tail.

    Attributes:
        family: one of :data:`NOISE_FAMILIES`.
        tail: the tail index of ‖ξ‖ (Student-t degrees of freedom, Pareto/Burr α);
            None for ``gaussian``.
        sigma: σ, the square root of E‖ξ‖².

    Raises:
        ValueError: unknown family, a tail index for ``gaussian``, a tail index ≤ 2
            (infinite variance), or σ < 0.
    """

    family: str
    tail: float | None = None
    sigma: float = 1.0

    def __post_init__(self) -> None:
        if self.family not in NOISE_FAMILIES:
            raise ValueError(f"Invalid noise family: {self.family!r} (must be one of {', '.join(NOISE_FAMILIES)})")
        if self.family == "gaussian":
            if self.tail is not None:
                raise ValueError("Invalid tail for gaussian noise: it has no tail parameter")
        else:
            tail = NOISE_FAMILIES[self.family] if self.tail is None else float(self.tail)
            if not math.isfinite(tail) or tail <= 2.0:
                raise ValueError(
                    f"Invalid tail index for {self.family}: {tail!r} (must be > 2: the theorems assume "
                    "a finite variance, which needs a tail index above 2)"
                )
            object.__setattr__(self, "tail", tail)
        if not (isinstance(self.sigma, (int, float)) and math.isfinite(self.sigma) and self.sigma >= 0):
            raise ValueError(f"Invalid sigma: {self.sigma!r} (must be >= 0 and finite)")

    @classmethod
    def parse(cls, text: str, sigma: float = 1.0) -> "NoiseModel":
        """``"gaussian"``, ``"student_t"`` or ``"student_t:2.5"`` (family[:tail index]).

        Raises:
            ValueError: malformed text, or an invalid family or tail (see the class).
        """
        family, _, tail = text.strip().partition(":")
        try:
            value = float(tail) if tail else None
        except ValueError:
            raise ValueError(f"Invalid noise {text!r}: the tail index after ':' must be a number") from None
        return cls(family, value, sigma)

    @property
    def name(self) -> str:
        """``gaussian`` or ``student_t:2.5``: the form :meth:`parse` reads."""
        return self.family if self.tail is None else f"{self.family}:{self.tail:g}"

    @property
    def heavy_tailed(self) -> bool:
        """True for every family with a polynomial tail (all but ``gaussian``)."""
        return self.tail is not None

    def describe(self) -> str:
        """One line for reports."""
        if self.family == "gaussian":
            return f"Gaussian N(0, σ²/d·I), σ = {self.sigma:g}"
        law = {
            "student_t": f"multivariate Student-t, ν = {self.tail:g} df",
            "pareto": f"radial Pareto (Lomax), α = {self.tail:g}",
            "burr": f"radial Burr XII, c = {_BURR_C:g}, k = {self.tail / _BURR_C:g}",
        }[self.family]
        return f"{law}, scaled to E‖ξ‖² = σ², σ = {self.sigma:g}; P(‖ξ‖ > t) ~ t^-{self.tail:g}"

    def sample(
        self,
        runs: int,
        dim: int,
        generator: torch.Generator,
        rng: np.random.Generator,
        *,
        scale: float = 1.0,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str = "cpu",
    ) -> Tensor:
        """``runs`` independent noise vectors of dimension ``dim``, times ``scale``.

        Args:
            generator: torch generator for the normal draws (on ``device``).
            rng: NumPy generator for the radial part.
            scale: an extra factor (1/√m for the variance of a size-m mini-batch).

        Returns:
            A ``(runs, dim)`` tensor whose rows have mean 0 and E‖row‖² = (σ·scale)².
        """
        z = torch.randn(runs, dim, generator=generator, dtype=torch.float32, device=device).to(dtype)
        factor = self.sigma * scale
        if self.family == "gaussian":
            return z.mul_(factor / math.sqrt(dim))
        if self.family == "student_t":
            # Z·√((ν-2)/V)/√d: E[(ν-2)/V] = 1 for V ~ χ²_ν, so E‖ξ‖² = σ².
            radial = np.sqrt((self.tail - 2.0) / rng.chisquare(self.tail, size=(runs, 1)))
            radial = torch.from_numpy(radial).to(device=device, dtype=dtype)
            return z.mul_(radial).mul_(factor / math.sqrt(dim))
        # Pareto / Burr: a radial law times a uniform direction Z/‖Z‖.
        radial = torch.from_numpy(self._radial(runs, rng)).to(device=device, dtype=dtype)
        norm = torch.linalg.vector_norm(z, dim=1, keepdim=True).clamp_min_(torch.finfo(torch.float32).tiny)
        return z.mul_(radial / norm).mul_(factor)

    def _radial(self, runs: int, rng: np.random.Generator) -> np.ndarray:
        """The radial part with E R² = 1, shape (runs, 1)."""
        alpha = self.tail
        if self.family == "pareto":
            # NumPy's pareto() is the Lomax law; E X² = 2/((α-1)(α-2)).
            x = rng.pareto(alpha, size=(runs, 1))
            return x * math.sqrt((alpha - 1.0) * (alpha - 2.0) / 2.0)
        # Burr XII by inversion: X = ((1-U)^(-1/k) - 1)^(1/c); E X² = k·B(k - 2/c, 1 + 2/c).
        k = alpha / _BURR_C
        u = rng.random(size=(runs, 1))
        x = np.power(np.expm1(-np.log1p(-u) / k), 1.0 / _BURR_C)
        return x / math.sqrt(k * beta_function(k - 2.0 / _BURR_C, 1.0 + 2.0 / _BURR_C))
