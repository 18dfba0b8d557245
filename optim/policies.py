"""Adaptive clipping policies: rules that rescale the gradient before any optimizer's step.

A policy is a small object with one interface, used by
:class:`optim.policy_optimizer.ClipPolicyOptimizer` in front of any base optimizer:

- :meth:`ClipPolicy.measure`: what the rule looks at (the global norm, or AGC's unit norms);
- :meth:`ClipPolicy.factor`: the clip factor(s) for this step, as device tensors, updating
  the policy's state (history, EMA, counters) only where the step is applied;
- :meth:`ClipPolicy.apply`: multiply the gradients by the factor(s) in place;
- :meth:`ClipPolicy.stats`: the last step's threshold, a device tensor, for logging.

The state is optimizer state (``state_dict``/``load_state_dict``). Nothing in
``measure``/``factor`` reads a device value on the host: decisions that depend on the
step number use the host-side count of ``step()`` calls the wrapper passes in, and the
rest is ``torch.where``. Policies in the registry: :data:`POLICIES`.

References:
    Seetharaman, Wichern, Pardo, Le Roux. AutoClip: adaptive gradient clipping for
    source separation networks. MLSP 2020.
    Kumar et al. ZClip: adaptive spike mitigation for LLM pre-training. 2025.
    Brock, De, Smith, Simonyan. High-performance large-scale image recognition without
    normalization. ICML 2021 (adaptive gradient clipping).

Why this module is over 400 lines: the three policies share one interface and its
state-dict handling, and each is short; splitting them would scatter that interface.
"""

from __future__ import annotations

import inspect
from typing import Any, Sequence

import torch
from torch import Tensor

from .base import check_positive, check_range
from .clipping import EPS, clip_coefficient

__all__ = ["AGC", "POLICIES", "AutoClip", "ClipPolicy", "ZClip", "make_policy", "policy_keywords"]

_INF = float("inf")


def _state_dtype(device: torch.device) -> torch.dtype:
    # float64 keeps the history and the EMA exact copies of the norms; MPS has no float64.
    return torch.float32 if device.type == "mps" else torch.float64


def _write(buffer: Tensor, index: Tensor, value: Tensor, when: Tensor) -> None:
    """``buffer[index] = value`` along dim 0 where ``when``, else unchanged: device ops only.

    ``index``, ``value`` and ``when`` have the shape of one entry (0-dim for one run; the
    convex suite's ``(runs, 1)`` for many runs, each with its own position).
    """
    index = index.long().unsqueeze(0)
    old = buffer.gather(0, index)
    buffer.scatter_(0, index, torch.where(when, value.to(buffer.dtype).unsqueeze(0), old))


class ClipPolicy:
    """Base class: a gradient-rescaling rule with its own (optimizer) state.

    Subclasses keep their state as tensors in ``self.state`` (created on the first step,
    on the gradients' device) and implement :meth:`factor`. AutoClip and ZClip work
    elementwise on the norm: a norm of shape ``(runs, 1)`` (the convex suite's many
    independent runs) gives each run its own history and EMA.
    """

    name = ""

    def __init__(self) -> None:
        self.state: dict[str, Tensor] = {}

    def bind(self, params: Sequence[Tensor], names: Sequence[str | None]) -> None:
        """Called once by the wrapper with every parameter and its name (None if unknown)."""

    def measure(self, params: Sequence[Tensor], grads: Sequence[Tensor], total_norm: Tensor) -> Any:
        """What :meth:`factor` needs; the global pre-clip norm ‖g‖ by default."""
        return total_norm

    def factor(self, measured: Any, applied: Tensor, calls: int) -> Tensor | list[Tensor]:
        """The clip factor: a 0-dim tensor (global) or one tensor per gradient (unit-wise).

        Args:
            measured: the output of :meth:`measure`.
            applied: 0-dim bool tensor, False on a skipped (non-finite) step; the state
                is then left exactly as it was.
            calls: ``step()`` calls before this one (a host-side count, skipped steps
                included: an upper bound of the applied steps).
        """
        raise NotImplementedError

    def apply(self, grads: Sequence[Tensor], factor: Tensor | list[Tensor], *, host: bool, foreach: bool) -> None:
        """Multiply the gradients in place by the factor (a global 0-dim one by default).

        ``host``: the tensors live in host memory, where reading the factor is free, so a
        factor of exactly 1 costs no pass over the gradients.
        """
        if host and float(factor) == 1.0:
            return
        if foreach:
            torch._foreach_mul_(list(grads), factor.to(grads[0].dtype) if grads[0].is_floating_point() else factor)
        else:
            for g in grads:
                g.mul_(factor)

    def ratio(self, factor: Tensor | list[Tensor], measured: Any, total_norm: Tensor) -> Tensor:
        """‖g after‖ / ‖g before‖, for the telemetry (the factor itself when global)."""
        return factor

    def stats(self) -> dict[str, Tensor]:
        """The last step's threshold λ (∞ when the rule did not clip), as a device tensor."""
        threshold = self.state.get("threshold")
        return {} if threshold is None else {"clip_threshold": threshold}

    # -- checkpoints -----------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {"name": self.name, "state": dict(self.state)}

    def load_state_dict(self, state_dict: dict[str, Any], device: torch.device) -> None:
        if state_dict.get("name", self.name) != self.name:
            raise ValueError(
                f"Invalid clip policy state: saved by {state_dict.get('name')!r}, loading into {self.name!r}"
            )
        self.state = {k: v.detach().clone().to(device) for k, v in state_dict.get("state", {}).items()}


class AutoClip(ClipPolicy):
    """AutoClip: clip by global norm at the p-th percentile of the gradient-norm history.

    .. code-block:: text

        h ← h ∪ {‖g‖}                      (the current step included)
        λₖ = percentile(h, p)              (linear interpolation, numpy's default)
        g ← clip(g, λₖ)

    Args:
        percentile: p in [0, 100] (10 in the paper).
        history: None keeps every step (the paper); an integer W keeps the last W.

    State: ``history`` (a device buffer, +inf past the stored norms; it doubles when full,
    decided by the host-side call count), ``count`` (norms stored), ``threshold`` (λₖ).

    References:
        Seetharaman, Wichern, Pardo, Le Roux. AutoClip: adaptive gradient clipping for
        source separation networks. MLSP 2020.
    """

    name = "autoclip"

    def __init__(self, percentile: float = 10.0, history: int | None = None) -> None:
        super().__init__()
        check_range("percentile", percentile, 0.0, 100.0, "[0, 100]")
        if history is not None and not (isinstance(history, int) and not isinstance(history, bool) and history > 0):
            raise ValueError(f"Invalid history: {history!r} (must be None, every step, or an integer > 0)")
        self.percentile = float(percentile)
        self.history = history

    def _buffer(self, norm: Tensor, calls: int) -> Tensor:
        if "history" not in self.state:
            dtype, device = _state_dtype(norm.device), norm.device
            size = self.history or 1024
            self.state["history"] = torch.full((size, *norm.shape), _INF, dtype=dtype, device=device)
            self.state["count"] = torch.zeros(norm.shape, dtype=torch.long, device=device)
            self.state["threshold"] = torch.full(norm.shape, _INF, dtype=dtype, device=device)
        buffer = self.state["history"]
        size = buffer.shape[0]
        if self.history is None and calls >= size:  # at most `calls` norms are stored
            grown = torch.full((2 * size, *buffer.shape[1:]), _INF, dtype=buffer.dtype, device=buffer.device)
            grown[:size].copy_(buffer)
            self.state["history"] = buffer = grown
        return buffer

    def factor(self, measured: Tensor, applied: Tensor, calls: int) -> Tensor:
        total = measured
        buffer = self._buffer(total, calls)
        count = self.state["count"]
        position = count if self.history is None else count % self.history
        _write(buffer, position, total, applied)
        count.add_(applied.long())
        stored = count if self.history is None else count.clamp(max=self.history)
        # Sorted, the stored norms come first (the rest is +inf): numpy's "linear" method
        # on them, with the index computed on the device.
        ordered = torch.sort(buffer, dim=0).values
        rank = (self.percentile / 100.0) * (stored - 1).clamp(min=0).to(buffer.dtype)
        low = rank.floor()
        high = torch.minimum(low + 1, (stored - 1).clamp(min=0).to(buffer.dtype))
        a = ordered.gather(0, low.long().unsqueeze(0))[0]
        b = ordered.gather(0, high.long().unsqueeze(0))[0]
        threshold = torch.lerp(a, b, rank - low)
        self.state["threshold"].copy_(torch.where(applied, threshold, self.state["threshold"]))
        return torch.where(applied, clip_coefficient(total.to(buffer.dtype), threshold), 1.0)


class ZClip(ClipPolicy):
    """ZClip, z-score mode with adaptive scaling: clip gradient-norm spikes against an EMA.

    .. code-block:: text

        warm-up (the first W applied steps): record ‖g‖ only (clip at max_norm if given);
            then μ = mean, σ² = population variance of the W norms
        each later step:
            z = (‖g‖ - μ) / (σ + 1e-6)
            if z > z_t:  λ = μ + z_t²·σ/z,  g ← clip(g, λ),  v = λ
            else:        v = ‖g‖
            μ ← a·μ + (1-a)·v
            σ² ← a·σ² + (1-a)·(v - μ)²          (with the updated μ)

    ``max_norm`` caps λ (λ ← min(λ, max_norm), also for v) and clips every other step at
    max_norm (v = ‖g‖ there, as without a spike).

    Args:
        warmup_steps: W ≥ 1 (25).
        z_threshold: z_t > 0 (2.5).
        ema_alpha: a in [0, 1) (0.97).
        max_norm: optional fixed cap > 0.

    State: ``warmup`` (the W recorded norms), ``count`` (how many), ``mean`` (μ), ``var``
    (σ²), ``threshold`` (λ of the last step, ∞ if it did not clip). Whether warm-up is
    over is decided on the host from the call count while fewer than W calls were made
    (it cannot be over); after that, in case steps were skipped, on the device.

    References:
        Kumar et al. ZClip: adaptive spike mitigation for LLM pre-training. 2025.
    """

    name = "zclip"

    def __init__(
        self,
        warmup_steps: int = 25,
        z_threshold: float = 2.5,
        ema_alpha: float = 0.97,
        max_norm: float | None = None,
    ) -> None:
        super().__init__()
        if not (isinstance(warmup_steps, int) and not isinstance(warmup_steps, bool) and warmup_steps >= 1):
            raise ValueError(f"Invalid warmup_steps: {warmup_steps!r} (must be an integer >= 1)")
        check_positive("z_threshold", z_threshold)
        check_range("ema_alpha", ema_alpha, 0.0, 1.0 - 1e-12, "[0, 1)")
        if max_norm is not None:
            check_positive("max_norm", max_norm)
        self.warmup_steps = warmup_steps
        self.z_threshold = float(z_threshold)
        self.ema_alpha = float(ema_alpha)
        self.max_norm = max_norm

    def _init(self, norm: Tensor) -> None:
        if self.state:
            return
        dtype, device, shape = _state_dtype(norm.device), norm.device, norm.shape
        self.state = {
            "warmup": torch.zeros((self.warmup_steps, *shape), dtype=dtype, device=device),
            "count": torch.zeros(shape, dtype=torch.long, device=device),
            "mean": torch.zeros(shape, dtype=dtype, device=device),
            "var": torch.zeros(shape, dtype=dtype, device=device),
            "threshold": torch.full(shape, _INF, dtype=dtype, device=device),
        }

    def factor(self, measured: Tensor, applied: Tensor, calls: int) -> Tensor:
        self._init(measured)
        s = self.state
        norm = measured.to(s["mean"].dtype)
        cap = _INF if self.max_norm is None else float(self.max_norm)
        # Host-side: with fewer than W calls, warm-up cannot be over (no device read).
        if calls < self.warmup_steps:
            in_warmup = torch.ones(norm.shape, dtype=torch.bool, device=norm.device)
        else:
            in_warmup = s["count"] < self.warmup_steps
        record = applied & in_warmup
        _write(s["warmup"], s["count"].clamp(max=self.warmup_steps - 1), norm, record)
        s["count"].add_(record.long())
        done = record & (s["count"] == self.warmup_steps)
        threshold = torch.full_like(norm, cap)
        if calls >= self.warmup_steps - 1:  # warm-up may end at this call or be over
            s["mean"].copy_(torch.where(done, s["warmup"].mean(dim=0), s["mean"]))
            s["var"].copy_(torch.where(done, s["warmup"].var(dim=0, correction=0), s["var"]))
        if calls >= self.warmup_steps:
            a, zt = self.ema_alpha, self.z_threshold
            mean, var = s["mean"], s["var"]
            std = var.sqrt()
            z = (norm - mean) / (std + 1e-6)
            spike = z > zt
            lam = torch.where(spike, mean + zt**2 * std / z, _INF).clamp(max=cap)
            v = torch.where(spike, lam, norm)
            new_mean = a * mean + (1 - a) * v
            new_var = a * var + (1 - a) * (v - new_mean) ** 2
            update = applied & ~in_warmup
            s["mean"].copy_(torch.where(update, new_mean, mean))
            s["var"].copy_(torch.where(update, new_var, var))
            threshold = torch.where(in_warmup, threshold, lam)
        s["threshold"].copy_(torch.where(applied, threshold, s["threshold"]))
        return torch.where(applied, clip_coefficient(norm, threshold), 1.0)


class AGC(ClipPolicy):
    """Adaptive gradient clipping, unit-wise: bound ‖G_i‖ / ‖W_i‖ per output unit.

    .. code-block:: text

        for each parameter W (gradient G) and unit i (a slice along dim 0 for ndim ≥ 2,
        the whole tensor for ndim ≤ 1):
            m_i = c · max(‖W_i‖, ε)
            if ‖G_i‖ > m_i:  G_i ← G_i · m_i / max(‖G_i‖, 1e-6)

    Args:
        clipping_ratio: c > 0 (0.01).
        unit_eps: ε > 0 (1e-3).
        exclude: parameter names left unclipped (the paper leaves the final classifier
            layer unclipped): a name matches itself and every name below it (``"fc"``
            matches ``"fc.weight"``). Needs named parameters (``model.named_parameters()``).

    AGC keeps no state; its ``threshold`` statistic is c.

    References:
        Brock, De, Smith, Simonyan. High-performance large-scale image recognition without
        normalization. ICML 2021, Section 4.
    """

    name = "agc"

    def __init__(self, clipping_ratio: float = 0.01, unit_eps: float = 1e-3, exclude: Sequence[str] = ()) -> None:
        super().__init__()
        check_positive("clipping_ratio", clipping_ratio)
        check_positive("unit_eps", unit_eps)
        if isinstance(exclude, str) or not all(isinstance(e, str) for e in exclude):
            raise ValueError(f"Invalid exclude: {exclude!r} (must be a list of parameter names)")
        self.clipping_ratio = float(clipping_ratio)
        self.unit_eps = float(unit_eps)
        self.exclude = tuple(exclude)
        self._excluded: set[int] = set()

    def bind(self, params: Sequence[Tensor], names: Sequence[str | None]) -> None:
        if not self.exclude:
            return
        if any(n is None for n in names):
            raise ValueError(
                f"Invalid exclude: {list(self.exclude)!r} needs parameter names; pass named parameters "
                "(model.named_parameters(), or groups with 'param_names') to the optimizer"
            )
        matched = {e: False for e in self.exclude}
        for p, n in zip(params, names):
            for e in self.exclude:
                if n == e or n.startswith(e + "."):
                    self._excluded.add(id(p))
                    matched[e] = True
        missing = [e for e, hit in matched.items() if not hit]
        if missing:
            raise ValueError(f"Invalid exclude: {missing!r} matches no parameter name (names: {list(names)[:8]} ...)")

    @staticmethod
    def _unit_norms(t: Tensor) -> Tensor:
        dtype = torch.float32 if t.dtype in (torch.float16, torch.bfloat16) else None
        if t.ndim <= 1:
            return torch.linalg.vector_norm(t, dtype=dtype)
        return torch.linalg.vector_norm(t, dim=tuple(range(1, t.ndim)), keepdim=True, dtype=dtype)

    def measure(self, params: Sequence[Tensor], grads: Sequence[Tensor], total_norm: Tensor) -> Any:
        return [
            None if id(p) in self._excluded else (self._unit_norms(p), self._unit_norms(g))
            for p, g in zip(params, grads)
        ]

    def factor(self, measured: Any, applied: Tensor, calls: int) -> list[Tensor | None]:
        if "threshold" not in self.state:
            device = applied.device
            self.state["threshold"] = torch.full((), self.clipping_ratio, dtype=_state_dtype(device), device=device)
        out: list[Tensor | None] = []
        for item in measured:
            if item is None:
                out.append(None)
                continue
            w_norm, g_norm = item
            bound = self.clipping_ratio * w_norm.clamp(min=self.unit_eps)
            f = torch.where(g_norm > bound, bound / g_norm.clamp(min=1e-6), 1.0)
            out.append(torch.where(applied, f, 1.0))
        return out

    def apply(self, grads: Sequence[Tensor], factor: Any, *, host: bool, foreach: bool) -> None:
        for g, f in zip(grads, factor):
            if f is None or (host and bool((f == 1).all())):
                continue
            g.mul_(f.to(g.dtype))

    def ratio(self, factor: Any, measured: Any, total_norm: Tensor) -> Tensor:
        # ‖g after‖² = Σ over units of (f_i·‖G_i‖)²; excluded tensors keep their part of
        # ‖g‖², recovered from the total (no extra pass over the gradients).
        dtype = total_norm.dtype
        before = after = total_norm.new_zeros(())
        clipped = torch.zeros((), dtype=torch.bool, device=total_norm.device)
        for f, item in zip(factor, measured):
            if item is None:
                continue
            g_norm = item[1].to(dtype)
            before = before + g_norm.pow(2).sum()
            after = after + (f.to(dtype) * g_norm).pow(2).sum()
            clipped = clipped | (f < 1).any()
        excluded = (total_norm**2 - before).clamp(min=0)
        ratio = torch.clamp((after + excluded).sqrt() / (total_norm + EPS), max=1.0)
        return torch.where(clipped, ratio, 1.0)


POLICIES: dict[str, type[ClipPolicy]] = {"autoclip": AutoClip, "zclip": ZClip, "agc": AGC}


def make_policy(name: str | ClipPolicy, **kwargs: Any) -> ClipPolicy:
    """A policy by name (``autoclip``, ``zclip``, ``agc``) with its keyword arguments.

    Raises:
        ValueError: unknown name or keyword, naming the valid ones.
    """
    if isinstance(name, ClipPolicy):
        if kwargs:
            raise ValueError("make_policy: pass either a ClipPolicy instance or a name with keyword arguments")
        return name
    if name not in POLICIES:
        raise ValueError(f"Invalid clip_policy: {name!r} (must be one of {', '.join(map(repr, POLICIES))})")
    cls = POLICIES[name]
    accepted = policy_keywords(name)
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ValueError(
            f"Unknown keyword(s) {', '.join(map(repr, unknown))} in clip_policy_args for {name!r}; "
            f"accepted: {', '.join(accepted)}"
        )
    return cls(**kwargs)


def policy_keywords(name: str) -> list[str]:
    """The keyword arguments of a policy's constructor."""
    return [k for k in inspect.signature(POLICIES[name].__init__).parameters if k != "self"]

