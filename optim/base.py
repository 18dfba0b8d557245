"""The shared machinery of the clipping optimizers.

Everything here is about bookkeeping that torch's ``Optimizer`` does not have: state
that belongs to the optimizer rather than to one parameter (step counters, clipped-SSTM's
A_k, the statistics of the last step), the non-finite gradient policy, the evaluation
point, and hyperparameters that must agree across parameter groups because they act on
the global gradient norm.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import Tensor
from torch.optim import Optimizer

from . import fused as fused_kernels
from .clipping import CLIPPING_KINDS, Clipping, get_clipping, global_norm

__all__ = ["ClippedOptimizer", "NONFINITE_POLICIES", "StepInputs"]

NONFINITE_POLICIES = ("skip", "raise")
#: Accumulators kept in float32 when the parameters are lower precision: an average
#: x̄ + (x - x̄)/(k+1) (or SSTM's y, z) stalls once the increment is below bf16 resolution.
LOW_PRECISION = (torch.bfloat16, torch.float16)


def check_positive(name: str, value: float, *, allow_inf: bool = False) -> None:
    """Raise ``ValueError`` unless ``value`` is a number > 0 (∞ only if allowed)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
    ok = ok and not math.isnan(value) and (allow_inf or math.isfinite(value))
    if not ok:
        bound = "> 0, inf allowed" if allow_inf else "> 0 and finite"
        raise ValueError(f"Invalid {name}: {value!r} (must be {bound})")


def check_range(name: str, value: float, low: float, high: float, spec: str) -> None:
    """Raise ``ValueError`` unless ``low <= value <= high`` (``spec`` names the range)."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not number or math.isnan(value) or not (low <= value <= high):
        raise ValueError(f"Invalid {name}: {value!r} (must be in {spec})")


def check_choice(name: str, value: Any, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"Invalid {name}: {value!r} (must be one of {', '.join(map(repr, choices))})")


@dataclass
class StepInputs:
    """What the common start of ``step()`` hands a subclass (:meth:`ClippedOptimizer._start_step`).

    ``groups`` holds ``(group, params, grads)`` for the groups with gradients (the
    gradients with weight decay added where the method adds it before clipping);
    ``norms`` their per-tensor norms, group by group; ``total_norm`` the global norm;
    ``applied`` whether it is finite; ``hparams`` the hyperparameters shared by all groups.
    """

    groups: list[tuple[dict[str, Any], list[Tensor], list[Tensor]]]
    norms: list[list[Tensor]]
    total_norm: Tensor
    applied: Tensor
    foreach: bool
    fused: bool
    clipping: Clipping
    hparams: dict[str, Any]


def _with_weight_decay(grads: list[Tensor], params: list[Tensor], weight_decay: float, foreach: bool) -> list[Tensor]:
    """g + w·x as new tensors (the gradients stay untouched)."""
    if not weight_decay or not grads:
        return grads
    if foreach:
        return list(torch._foreach_add(grads, params, alpha=weight_decay))
    return [g.add(x, alpha=weight_decay) for g, x in zip(grads, params)]


class ClippedOptimizer(Optimizer):
    """Base class: optimizer-level state, the non-finite policy and the evaluation point.

    Optimizer-level state lives in ``self.global_state`` (0-dim tensors on the parameters'
    device, so reading it never forces a host sync inside ``step()``) and round-trips
    through ``state_dict()`` under the key ``"global_state"``. Keys shared by subclasses:

    - ``step``: number of applied (non-skipped) steps, k in the paper.
    - ``skipped_steps``: steps skipped because the gradient norm was not finite.
    - ``clipped_steps``: applied steps on which some tensor or coordinate was actually
      scaled (see :mod:`optim.clipping` for each kind; a zero gradient is not clipped).
    - ``grad_norm``: ‖g‖₂ of the last step's gradient, before clipping.
    - ``clip_factor``: ‖clip(g)‖ / ‖g‖ of the last step on a clipped step, exactly 1
      otherwise (and on a skipped step).

    ``step()`` of a subclass starts with :meth:`_start_step` (closure, collect, the
    optimizer-level state, weight decay before clipping where the method adds it there,
    measure) and ends with :meth:`_finish_step` (clip statistics, counters).

    Lower-precision parameters (bf16/fp16) keep the accumulators named in
    ``_accumulators`` (an average, SSTM's y and z) in float32, through checkpoints too:
    an increment (x - x̄)/(k+1) below the parameter's resolution would otherwise stall them.

    Subclasses list the hyperparameters that act on the global norm in
    ``_global_hparams``; those must agree across parameter groups.

    Extension points (protected, kept stable): :meth:`_measure` (how the gradient norm
    is measured and whether the step applies) and :meth:`_init_global_state` (the shape
    of the optimizer-level state). ``benchmark.convex.per_run`` overrides both to run
    many independent problems as rows of one tensor, each with its own norm and
    counters, through the unchanged ``step()`` and kernels.
    """

    _global_hparams: tuple[str, ...] = ()
    #: Per-parameter state kept in float32 under bf16/fp16 parameters.
    _accumulators: tuple[str, ...] = ()
    #: The optimizer-level state keys a subclass adds to the shared ones.
    _extra_global_state: tuple[str, ...] = ()
    #: True where the method adds weight decay to the gradient before clipping (SSTM).
    _decay_before_clipping = False

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        defaults: dict[str, Any],
        *,
        foreach: bool | None,
        nonfinite: str,
        fused: bool | None = None,
        device_path: bool | None = None,
    ) -> None:
        check_choice("nonfinite", nonfinite, NONFINITE_POLICIES)
        for name, flag in (("foreach", foreach), ("fused", fused), ("device_path", device_path)):
            if flag not in (None, True, False):
                raise ValueError(f"Invalid {name}: {flag!r} (must be None, True or False)")
        check_choice("clipping", defaults["clipping"], CLIPPING_KINDS)
        super().__init__(params, defaults)
        self.foreach = foreach
        self.fused = fused
        self.device_path = device_path
        self.nonfinite = nonfinite
        self.global_state: dict[str, Tensor] = {}
        if fused:  # fail at construction, as torch's fused optimizers do
            reason = fused_kernels.fused_support([p for group in self.param_groups for p in group["params"]])
            if reason is not None:
                raise ValueError(f"Invalid fused: True ({reason}); pass fused=None or False")

    # -- hyperparameters -------------------------------------------------------------

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        self._validate_group(self.param_groups[-1])
        first = self.param_groups[0]
        for name in self._global_hparams:
            if self.param_groups[-1][name] != first[name]:
                raise ValueError(
                    f"Invalid {name}: parameter groups disagree ({first[name]!r} vs "
                    f"{self.param_groups[-1][name]!r}); it acts on the global gradient norm, "
                    "so it must be the same in every group"
                )

    def _validate_group(self, group: dict[str, Any]) -> None:
        """Raise ``ValueError`` for an invalid hyperparameter of one group."""
        raise NotImplementedError

    def _shared(self, name: str) -> Any:
        """A hyperparameter that must agree across groups (re-checked: schedulers write groups)."""
        value = self.param_groups[0][name]
        for group in self.param_groups[1:]:
            if group[name] != value:
                raise ValueError(
                    f"Invalid {name}: parameter groups disagree ({value!r} vs {group[name]!r}); "
                    "it must be the same in every group"
                )
        return value

    # -- step helpers ----------------------------------------------------------------

    def _use_foreach(self, tensors: Sequence[Tensor]) -> bool:
        if self.foreach is not None:
            return self.foreach
        return all(t.device.type in ("cpu", "cuda") and not t.is_sparse for t in tensors)

    def _use_fused(self, tensors: Sequence[Tensor]) -> bool:
        """The fused kernels of :mod:`optim.fused`: with ``fused=None`` whenever every
        tensor is on CUDA and Triton can run them."""
        if self.fused is False or (self.fused is None and not all(t.is_cuda for t in tensors)):
            return False
        reason = fused_kernels.fused_support(tensors)
        if reason is not None and self.fused:
            raise RuntimeError(f"{type(self).__name__}(fused=True): {reason}")
        return reason is None

    def _run_closure(self, closure: Callable[[], Any] | None) -> Any:
        if closure is None:
            return None
        with torch.enable_grad():
            return closure()

    def _collect(self) -> list[tuple[dict[str, Any], list[Tensor], list[Tensor]]]:
        """``(group, params, grads)`` for every group, params without a gradient left out."""
        out = []
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            for p in params:
                if p.grad.is_sparse:
                    raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
            out.append((group, params, [p.grad for p in params]))
        return out

    def _start_step(self, closure: Callable[[], Any] | None) -> tuple[Any, StepInputs | None]:
        """The common start of ``step()``: ``(loss, inputs)``, inputs None without gradients.

        Runs the closure, collects the gradients, creates the optimizer-level state, adds
        weight decay to the gradient where the method clips it (``_decay_before_clipping``)
        and measures the norms (:meth:`_measure`).
        """
        loss = self._run_closure(closure)
        collected = self._collect()
        all_grads = [g for _, _, grads in collected for g in grads]
        if not all_grads:
            return loss, None
        self._init_global_state(all_grads[0].device, self._extra_global_state)
        foreach = self._use_foreach(all_grads)
        fused = self._use_fused(all_grads)
        hparams = {name: self._shared(name) for name in self._global_hparams}
        if self._decay_before_clipping:
            collected = [
                (group, params, _with_weight_decay(grads, params, group["weight_decay"], foreach))
                for group, params, grads in collected
            ]
        groups = [(group, params, grads) for group, params, grads in collected if params]
        norms, total, applied = self._measure([grads for _, _, grads in groups], foreach)
        inputs = StepInputs(groups, norms, total, applied, foreach, fused, get_clipping(hparams["clipping"]), hparams)
        return loss, inputs

    def _finish_step(self, inputs: StepInputs, threshold: float | Tensor,
                     clipped_norms: Sequence[Tensor | None]) -> None:  # fmt: skip
        """The clip statistics of the step (:meth:`Clipping.stats`) and the counters."""
        factor, clipped = inputs.clipping.stats(
            threshold,
            grads=[g for _, _, grads in inputs.groups for g in grads],
            norms=[n for group in inputs.norms for n in group],
            total_norm=inputs.total_norm,
            clipped_norms=clipped_norms,
            foreach=inputs.foreach,
        )
        self._record(inputs.total_norm, factor, clipped, inputs.applied)

    def _init_global_state(self, device: torch.device, extra: Sequence[str] = ()) -> None:
        if self.global_state:
            return
        # float64 counters are exact integers; MPS has no float64.
        dtype = torch.float32 if device.type == "mps" else torch.float64
        for key in ("step", "skipped_steps", "clipped_steps", "grad_norm", "clip_factor", *extra):
            self.global_state[key] = torch.zeros((), dtype=dtype, device=device)
        self.global_state["clip_factor"].fill_(1.0)

    def _measure(self, grads_per_group: Sequence[Sequence[Tensor]], foreach: bool):
        """Per-group tensor norms, the global norm and whether it is finite.

        With ``nonfinite="raise"`` this is the one place that reads a device value on the
        host, before any state is touched.
        """
        # Every kind measures the per-tensor l2 norms; a policy wrapper has no "clipping".
        kind = get_clipping(self.param_groups[0].get("clipping", "norm"))
        norms = [kind.measure(g, foreach=foreach) for g in grads_per_group]
        total = global_norm([n for group in norms for n in group])
        applied = torch.isfinite(total)
        if self.nonfinite == "raise" and not bool(applied):
            step = int(self.global_state["step"].item()) + int(self.global_state["skipped_steps"].item())
            raise FloatingPointError(
                f"{type(self).__name__}: non-finite gradient norm ({total.item()}) at step "
                f"{step + 1} (call {step + 1} of step()); no parameter or state was changed. "
                "Lower the learning rate, check the loss for NaN/Inf, or pass "
                "nonfinite='skip' to skip such steps and count them."
            )
        return norms, total, applied

    def _record(self, total: Tensor, factor: Tensor, clipped: Tensor, applied: Tensor) -> None:
        """Update the shared counters and last-step statistics (device ops only)."""
        gs = self.global_state
        applied_f = applied.to(gs["step"].dtype)
        gs["step"].add_(applied_f)
        gs["skipped_steps"].add_(1 - applied_f)
        gs["clipped_steps"].add_(applied_f * clipped.to(applied_f.dtype))
        gs["grad_norm"].copy_(total)
        gs["clip_factor"].copy_(torch.where(applied, factor, 1.0))

    def _state(self, params: list[Tensor], key: str, init: Callable[[Tensor], Tensor]) -> list[Tensor]:
        """``self.state[p][key]`` for each parameter, created with ``init(p)`` where missing:
        in float32 for a lower-precision parameter when ``key`` is an accumulator."""
        out = []
        for p in params:
            state = self.state[p]
            if key not in state:
                value = init(p.detach())
                if key in self._accumulators and p.dtype in LOW_PRECISION:
                    value = value.float()
                state[key] = value
            out.append(state[key])
        return out

    # -- what callers read -----------------------------------------------------------

    @property
    def num_skipped_steps(self) -> int:
        """Steps skipped for a non-finite gradient norm (reads the device: a sync)."""
        value = self.global_state.get("skipped_steps")
        return 0 if value is None else int(value.item())

    def step_stats(self) -> dict[str, Tensor]:
        """The last step's statistics as device tensors, for lazy logging (no sync)."""
        gs = self.global_state
        if not gs:
            return {}
        stats = {
            "grad_norm": gs["grad_norm"],
            "clip_factor": gs["clip_factor"],
            "clipped_fraction": gs["clipped_steps"] / gs["step"].clamp(min=1),
            "skipped_steps": gs["skipped_steps"],
        }
        stats.update(self._extra_stats())
        return stats

    def _extra_stats(self) -> dict[str, Tensor]:
        return {}

    def evaluation_point(self) -> list[Tensor]:
        """Where theory evaluates the method: one tensor per parameter, in group order.

        The parameters themselves unless a subclass keeps another iterate.
        """
        return [p for group in self.param_groups for p in group["params"]]

    # -- checkpoints -----------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["global_state"] = dict(self.global_state)
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        global_state = state_dict.get("global_state", {})
        # torch's loader casts floating state to the parameter's dtype: the float32
        # accumulators of bf16/fp16 parameters are set aside and put back in float32.
        accumulators = {}
        for saved, group in zip(state_dict["param_groups"], self.param_groups):
            for index, p in zip(saved["params"], group["params"]):
                for key, value in state_dict["state"].get(index, {}).items():
                    if key in self._accumulators and p.dtype in LOW_PRECISION and isinstance(value, Tensor):
                        accumulators[p, key] = value
        super().load_state_dict(state_dict)
        for (p, key), value in accumulators.items():
            self.state[p][key] = value.detach().to(device=p.device, dtype=torch.float32)
        params = [p for group in self.param_groups for p in group["params"]]
        device = params[0].device if params else torch.device("cpu")
        # Cloned: torch's loader keeps same-device tensors as they are, and in-place
        # updates must not write into the caller's dict (or into another optimizer).
        for state in self.state.values():
            for key, value in state.items():
                if isinstance(value, Tensor):
                    state[key] = value.clone()
        self.global_state = {k: v.detach().clone().to(device) for k, v in global_state.items()}
