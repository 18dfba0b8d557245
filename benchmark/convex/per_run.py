"""Many independent runs of a clipping optimizer in one instance: one row per run.

The optimizers of :mod:`optim` clip by the l2 norm of *all* their parameters together.
To run R independent copies at once, the parameter is one ``(R, n)`` tensor, and the
"whole gradient" of run r must be row r. :class:`PerRun` changes exactly that and
nothing else, by overriding the two bookkeeping hooks of
:class:`optim.base.ClippedOptimizer`:

- ``_measure`` returns per-row norms of shape ``(R, 1)`` (instead of one global norm),
  and a per-row ``applied`` flag (a non-finite gradient skips that run only);
- ``_init_global_state`` gives every optimizer-level counter (k, A_k, ...) the shape
  ``(R, 1)``, so each run keeps its own schedule.

``step()``, the functional cores and the kernels run unchanged: every formula in them is
elementwise or broadcasts over ``(R, 1)`` factors, so row r evolves exactly as a
separate optimizer on run r would (a test checks this against the plain classes). The
optimizer math is not copied here. ``foreach`` must be False: torch's multi-tensor ops
take only 0-dim tensor factors.

References:
    Gorbunov, Danilova, Gasnikov. Stochastic optimization with heavy-tailed noise via
    accelerated gradient clipping. NeurIPS 2020, Algorithms 1-2.
"""

from __future__ import annotations

from typing import Any, Iterable

import torch

from optim import ClippedSGD, ClippedSSTM

__all__ = ["PerRun", "PerRunClippedSGD", "PerRunClippedSSTM"]


class PerRun:
    """Mixin for a :class:`~optim.base.ClippedOptimizer`: each row of the parameters is a run.

    Every parameter must be a 2-D tensor ``(runs, n_i)`` with the same number of rows;
    run r is row r of every parameter, and its gradient norm is taken over those rows
    (the ``norm`` clipping of the paper, per run). Only ``norm`` clipping is accepted:
    ``coordinate_wise`` would step correctly (it is elementwise) but its logged clip
    ratio mixes runs, and ``layer_wise`` has no per-run meaning.

    Optimizer-level state (``global_state``) has shape ``(runs, 1)``: ``step`` is k per
    run, clipped-SSTM's ``A`` is A_k per run, and so on.

    Raises:
        ValueError: at construction, for ``foreach=True``, clipping other than ``norm``,
            non-2-D parameters or parameters with different row counts.
    """

    def __init__(self, params: Iterable[Any], *args: Any, foreach: bool | None = False, **kwargs: Any) -> None:
        if foreach:
            raise ValueError("Invalid foreach: True (per-run factors are (runs, 1) tensors; use foreach=False)")
        super().__init__(params, *args, foreach=False, **kwargs)
        if self.defaults["clipping"] != "norm":
            clipping = self.defaults["clipping"]
            raise ValueError(f"Invalid clipping: {clipping!r} (per-run optimizers support 'norm' only)")
        tensors = [p for group in self.param_groups for p in group["params"]]
        rows = {p.shape[0] if p.dim() == 2 else None for p in tensors}
        if None in rows or len(rows) != 1:
            raise ValueError(
                f"{type(self).__name__}: every parameter must be a (runs, n) matrix with the same runs; "
                f"got shapes {[tuple(p.shape) for p in tensors]}"
            )
        self.runs: int = rows.pop()

    def _init_global_state(self, device: torch.device, extra: tuple[str, ...] = ()) -> None:
        if self.global_state:
            return
        super()._init_global_state(device, extra)
        for key, value in self.global_state.items():
            self.global_state[key] = value.expand(self.runs, 1).clone()

    def _measure(self, grads_per_group, foreach):
        # Per-row l2 norm of each tensor, then of the concatenation (as optim's global_norm
        # does for the whole gradient); fp16/bf16 reduce in float32 like tensor_norms.
        row_norms = [
            torch.linalg.vector_norm(g, dim=1, keepdim=True, dtype=torch.promote_types(g.dtype, torch.float32))
            for grads in grads_per_group
            for g in grads
        ]
        total = row_norms[0]
        if len(row_norms) > 1:
            total = torch.linalg.vector_norm(torch.cat(row_norms, dim=1), dim=1, keepdim=True)
        applied = torch.isfinite(total)
        if self.nonfinite == "raise" and not bool(applied.all()):
            bad = torch.nonzero(~applied.view(-1)).view(-1).tolist()
            raise FloatingPointError(
                f"{type(self).__name__}: non-finite gradient norm in run(s) {bad[:10]}; no parameter or "
                "state was changed. Pass nonfinite='skip' to skip such steps run by run."
            )
        # Per-tensor norms are only read by layer_wise clipping (refused above).
        norms = [[total for _ in grads] for grads in grads_per_group]
        return norms, total, applied

    @property
    def num_skipped_steps(self) -> int:
        """Skipped steps summed over runs."""
        value = self.global_state.get("skipped_steps")
        return 0 if value is None else int(value.sum().item())


class PerRunClippedSGD(PerRun, ClippedSGD):
    """:class:`~optim.ClippedSGD` over ``(runs, n)`` parameters, one run per row."""


class PerRunClippedSSTM(PerRun, ClippedSSTM):
    """:class:`~optim.ClippedSSTM` over ``(runs, n)`` parameters, one run per row."""

