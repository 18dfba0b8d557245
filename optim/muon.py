"""Muon for the 2-D weights, AdamW for the rest: ``torch.optim.Muon`` as its docs advise."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable, Iterable

import torch
from torch import Tensor
from torch.optim import Optimizer

__all__ = ["MuonAdamW"]


class MuonAdamW(Optimizer):
    """``torch.optim.Muon`` on every 2-D parameter, ``torch.optim.AdamW`` on the others.

    Muon orthogonalises the momentum of a weight matrix (Newton-Schulz iterations) and is
    defined for 2-D parameters only; torch's documentation says to optimise biases, gains
    and every other parameter with a standard method such as AdamW. Each parameter group
    given is split in two (its 2-D part, the rest), so ``param_groups`` lists the Muon
    groups first, then the AdamW groups; a scheduler scales both. Convolution kernels
    (4-D) go to AdamW, as torch's Muon rejects them.

    Args:
        params: parameters or parameter groups (a group's ``lr``/``weight_decay`` apply to
            both parts).
        lr: learning rate of both parts; with ``adjust_lr_fn="match_rms_adamw"`` Muon's
            update has AdamW's RMS, so one rate serves both (Liu et al. 2025).
        weight_decay: decoupled weight decay of both parts.
        momentum, nesterov, ns_steps, adjust_lr_fn: Muon's (``torch.optim.Muon``).
        betas, eps: AdamW's.

    State: that of the two torch optimizers; ``state_dict()`` holds both (keys ``muon``,
    ``adamw``).

    References:
        Jordan et al. Muon: an optimizer for hidden layers in neural networks. 2024.
        Liu et al. Muon is scalable for LLM training. arXiv:2502.16982, 2025.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        weight_decay: float = 0.1,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_steps: int = 5,
        adjust_lr_fn: str | None = "match_rms_adamw",
        betas: tuple[float, float] = (0.9, 0.95),
        eps: float = 1e-8,
    ) -> None:
        if not hasattr(torch.optim, "Muon"):
            raise ImportError(f"muon needs torch.optim.Muon (torch >= 2.9); this is torch {torch.__version__}")
        groups = list(params)
        if groups and not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        matrix, other = [], []
        for group in groups:
            ps = [group["params"]] if isinstance(group["params"], Tensor) else list(group["params"])
            rest = {k: v for k, v in group.items() if k != "params"}
            two_d = [p for p in ps if p.ndim == 2]
            if two_d:
                matrix.append({**rest, "params": two_d})
            if len(two_d) < len(ps):
                other.append({**rest, "params": [p for p in ps if p.ndim != 2]})
        self.muon = torch.optim.Muon(matrix, lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov,
                                     ns_steps=ns_steps, adjust_lr_fn=adjust_lr_fn) if matrix else None  # fmt: skip
        self.adamw = torch.optim.AdamW(other, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay) if other else None
        if self.muon is None and self.adamw is None:
            raise ValueError("optimizer got an empty parameter list")
        self.defaults = dict(lr=lr, weight_decay=weight_decay)
        for hooks in ("step_pre", "step_post", "state_dict_pre", "state_dict_post",
                      "load_state_dict_pre", "load_state_dict_post"):  # fmt: skip
            setattr(self, f"_optimizer_{hooks}_hooks", OrderedDict())
        self._patch_step_function()
        self._warned_capturable_if_run_uncaptured = True

    @property
    def _parts(self) -> list[Optimizer]:
        return [o for o in (self.muon, self.adamw) if o is not None]

    @property
    def param_groups(self) -> list[dict[str, Any]]:  # type: ignore[override]
        # The parts' own group dicts: writes (a scheduler's lr) reach them.
        return [g for o in self._parts for g in o.param_groups]

    @param_groups.setter
    def param_groups(self, value: Any) -> None:
        raise AttributeError("MuonAdamW.param_groups belong to its two parts")

    @property
    def state(self) -> dict[Tensor, Any]:  # type: ignore[override]
        # A merged view whose values are the parts' per-parameter dicts (moved in place).
        return {p: s for o in self._parts for p, s in o.state.items()}

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for o in self._parts:
            o.step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        for o in self._parts:
            o.zero_grad(set_to_none=set_to_none)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        raise NotImplementedError("MuonAdamW: pass every parameter group at construction")

    def state_dict(self) -> dict[str, Any]:
        return {name: o.state_dict() for name, o in (("muon", self.muon), ("adamw", self.adamw)) if o is not None}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        for name, o in (("muon", self.muon), ("adamw", self.adamw)):
            if o is not None:
                if name not in state_dict:
                    raise ValueError(f"Invalid MuonAdamW state_dict: no {name!r} part (keys: {sorted(state_dict)})")
                o.load_state_dict(state_dict[name])
