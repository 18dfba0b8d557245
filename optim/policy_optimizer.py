"""A clipping policy in front of any optimizer: ``ClipPolicyOptimizer(base, policy)``.

The wrapper shares the base optimizer's ``param_groups`` and ``state`` (so LR schedulers,
Lightning and checkpoints see one optimizer), measures the gradient, lets the policy
rescale it in place (as ``torch.nn.utils.clip_grad_norm_`` does), then calls the base
optimizer's ``step()``. Registry entries such as ``sgd_zclip`` are classes made by
:func:`policy_optimizer_class`; ``build_optimizer(name, params, clip_policy=...)`` wraps
any registered optimizer.
"""

from __future__ import annotations

import inspect
from collections import OrderedDict
from typing import Any, Callable, Iterable

import torch
from torch import Tensor
from torch.optim import Optimizer

from .base import NONFINITE_POLICIES, ClippedOptimizer, check_choice
from .clipping import host_path
from .policies import POLICIES, ClipPolicy, make_policy, policy_keywords

__all__ = [
    "AdamWAutoClip",
    "AdamWZClip",
    "ClipPolicyOptimizer",
    "SGDAGC",
    "SGDAutoClip",
    "SGDZClip",
    "policy_optimizer_class",
]


class ClipPolicyOptimizer(ClippedOptimizer):
    """Run ``policy`` on the gradients, then ``optimizer.step()``.

    Args:
        optimizer: the base optimizer (any ``torch.optim.Optimizer``), already built.
        policy: a :class:`~optim.policies.ClipPolicy` (AutoClip, ZClip, AGC).
        nonfinite: ``"skip"``: a step whose gradient norm is not finite changes neither
            the parameters, nor the base optimizer's state, nor the policy's state, and is
            counted in ``num_skipped_steps``; ``"raise"`` raises ``FloatingPointError``.

    On CPU the skip is a branch (reading a 0-dim CPU tensor is a memory load). On an
    accelerator nothing is read on the host: a base that is a
    :class:`~optim.base.ClippedOptimizer` skips the non-finite step itself; any other base
    steps and is then rolled back on the device (``torch.where`` of the parameters and its
    state tensors against a copy; state created by that step is reset to zeros, the
    initial value of torch's and lion's buffers). For that, bases with a ``capturable``
    flag (torch's Adam/AdamW) are switched to it, so their step counters live on the
    device too.

    Optimizer state: the base's ``state_dict()`` plus ``clip_policy`` (the policy's state
    and the host-side call count) and ``global_state`` (the counters and last-step
    statistics of :class:`~optim.base.ClippedOptimizer`, plus ``clip_threshold``).
    """

    def __init__(self, optimizer: Optimizer, policy: ClipPolicy, *, nonfinite: str = "skip") -> None:
        if not isinstance(optimizer, Optimizer):
            raise ValueError(f"Invalid optimizer: {type(optimizer).__name__} (must be a torch.optim.Optimizer)")
        if not isinstance(policy, ClipPolicy):
            raise ValueError(f"Invalid policy: {type(policy).__name__} (must be a ClipPolicy from optim.policies)")
        check_choice("nonfinite", nonfinite, NONFINITE_POLICIES)
        # What Optimizer.__init__ sets up, with the base's groups and state shared (not copied).
        self.optimizer = optimizer
        self.policy = policy
        self.defaults = optimizer.defaults
        for hooks in ("step_pre", "step_post", "state_dict_pre", "state_dict_post",
                      "load_state_dict_pre", "load_state_dict_post"):  # fmt: skip
            setattr(self, f"_optimizer_{hooks}_hooks", OrderedDict())
        self._patch_step_function()
        self._warned_capturable_if_run_uncaptured = True
        self.foreach = None
        self.fused = False
        self.nonfinite = nonfinite
        self.global_state: dict[str, Tensor] = {}
        self._calls = 0
        params, names = [], []
        for group in self.param_groups:
            group_names = group.get("param_names") or [None] * len(group["params"])
            params.extend(group["params"])
            names.extend(group_names)
        policy.bind(params, names)

    # The base's own groups and state, read through (never copied): a scheduler's lr
    # reaches the base, and state the base creates or reloads is what this wrapper sees.
    @property
    def param_groups(self) -> list[dict[str, Any]]:  # type: ignore[override]
        return self.optimizer.param_groups

    @property
    def state(self) -> Any:  # type: ignore[override]
        return self.optimizer.state

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        self.optimizer.add_param_group(param_group)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.policy.name}, {self.optimizer!r})"

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Measure, rescale the gradients by the policy, step the base optimizer."""
        loss = self._run_closure(closure)
        collected = self._collect()
        params = [p for _, ps, _ in collected for p in ps]
        grads = [g for _, _, gs in collected for g in gs]
        if not grads:
            return loss
        device = grads[0].device
        self._init_global_state(device, extra=("clip_threshold",))
        foreach = self._use_foreach(grads)
        _, total, applied = self._measure([gs for _, _, gs in collected], foreach)
        measured = self.policy.measure(params, grads, total)
        factor = self.policy.factor(measured, applied, self._calls)
        self._calls += 1
        host = host_path("norm", applied, params)
        if host and not bool(applied):
            self._record(total, torch.ones_like(total), torch.zeros_like(applied), applied)
            return loss
        self.policy.apply(grads, factor, host=host, foreach=foreach)
        if host or isinstance(self.optimizer, ClippedOptimizer):
            self.optimizer.step()
        else:
            self._step_with_rollback(params, applied)
        # Clipped: the policy actually shortened a non-zero gradient (the clipping kinds' rule).
        ratio = self.policy.ratio(factor, measured, total)
        clipped = (total > 0) & (ratio < 1)
        self._record(total, torch.where(clipped, ratio, 1.0), clipped, applied)
        threshold = self.policy.stats().get("clip_threshold")
        if threshold is not None:
            self.global_state["clip_threshold"].copy_(threshold)
        return loss

    def _step_with_rollback(self, params: list[Tensor], applied: Tensor) -> None:
        if params[0].device.type != "cpu":  # (the forced device path on CPU keeps them on CPU anyway)
            for group in self.param_groups:
                if group.get("capturable") is False:
                    group["capturable"] = True
        saved_params = [p.detach().clone() for p in params]
        saved_state = [
            {k: v.clone() for k, v in self.state[p].items() if isinstance(v, Tensor)} if p in self.state else {}
            for p in params
        ]
        self.optimizer.step()
        for p, old, old_state in zip(params, saved_params, saved_state):
            p.copy_(torch.where(applied, p, old))
            for key, value in self.state.get(p, {}).items():
                if isinstance(value, Tensor):
                    before = old_state.get(key)
                    value.copy_(torch.where(applied, value, torch.zeros_like(value) if before is None else before))

    def evaluation_point(self) -> list[Tensor]:
        """The base optimizer's (the average x̄ of an averaged clipped-SGD, say)."""
        from .evaluation import evaluation_point

        return evaluation_point(self.optimizer)

    def _extra_stats(self) -> dict[str, Tensor]:
        return {"clip_threshold": self.global_state["clip_threshold"]}

    # -- checkpoints -----------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        state = self.optimizer.state_dict()
        state["global_state"] = {**state.get("global_state", {}), **_prefixed(self.global_state)}
        state["clip_policy"] = {**self.policy.state_dict(), "calls": self._calls}
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        policy_state = state_dict.pop("clip_policy", None)
        merged = dict(state_dict.get("global_state", {}))
        own = {k[len(_PREFIX):]: merged.pop(k) for k in list(merged) if k.startswith(_PREFIX)}
        if merged:
            state_dict["global_state"] = merged
        else:
            state_dict.pop("global_state", None)
        self.optimizer.load_state_dict(state_dict)
        params = [p for group in self.param_groups for p in group["params"]]
        device = params[0].device if params else torch.device("cpu")
        self.global_state = {k: v.detach().clone().to(device) for k, v in own.items()}
        if policy_state is not None:
            self._calls = int(policy_state.get("calls", 0))
            self.policy.load_state_dict(policy_state, device)


# The wrapper's counters sit beside a ClippedOptimizer base's own in one "global_state".
_PREFIX = "policy/"


def _prefixed(state: dict[str, Tensor]) -> dict[str, Tensor]:
    return {_PREFIX + k: v for k, v in state.items()}


def policy_optimizer_class(base: type[Optimizer], policy: str, name: str, doc: str = "") -> type[ClipPolicyOptimizer]:
    """A class ``Name(params, **base_and_policy_keywords)`` for the registry.

    Its signature lists the base optimizer's keywords, then the policy's, then
    ``nonfinite`` (so ``OptimizerSpec.accepted_keywords`` and configs see them all).

    Raises:
        ValueError: a policy keyword that the base optimizer also takes.
    """
    base_sig = inspect.signature(base.__init__)
    base_params = [p for n, p in base_sig.parameters.items() if n not in ("self", "params")
                   and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]  # fmt: skip
    policy_names = policy_keywords(policy)
    clash = sorted({p.name for p in base_params} & {*policy_names, "nonfinite"})
    if clash:
        raise ValueError(f"policy_optimizer_class: {policy!r} keywords {clash} clash with {base.__name__}'s")
    policy_sig = inspect.signature(POLICIES[policy].__init__)
    extra = [policy_sig.parameters[n].replace(kind=inspect.Parameter.KEYWORD_ONLY) for n in policy_names]
    extra.append(inspect.Parameter("nonfinite", inspect.Parameter.KEYWORD_ONLY, default="skip", annotation=str))
    head = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD),
            inspect.Parameter("params", inspect.Parameter.POSITIONAL_OR_KEYWORD)]  # fmt: skip
    positional = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) if p.kind == p.POSITIONAL_OR_KEYWORD else p
                  for p in base_params]  # fmt: skip
    signature = inspect.Signature(head + sorted(positional + extra, key=lambda p: p.kind))

    def __init__(self: ClipPolicyOptimizer, params: Iterable[Any], **kwargs: Any) -> None:
        bound = signature.bind(self, params, **kwargs)
        args = dict(bound.arguments)
        args.pop("self"), args.pop("params")
        policy_args = {k: args.pop(k) for k in policy_names if k in args}
        nonfinite = args.pop("nonfinite", "skip")
        ClipPolicyOptimizer.__init__(self, base(params, **args), make_policy(policy, **policy_args), nonfinite=nonfinite)

    __init__.__signature__ = signature  # type: ignore[attr-defined]
    return type(name, (ClipPolicyOptimizer,), {"__init__": __init__, "__doc__": doc, "__module__": __name__})


# The registry's ready pairs (optim.factory): importable classes, so dotted targets work.
SGDAutoClip = policy_optimizer_class(torch.optim.SGD, "autoclip", "SGDAutoClip", "torch.optim.SGD behind AutoClip.")
SGDZClip = policy_optimizer_class(torch.optim.SGD, "zclip", "SGDZClip", "torch.optim.SGD behind ZClip.")
SGDAGC = policy_optimizer_class(torch.optim.SGD, "agc", "SGDAGC", "torch.optim.SGD behind unit-wise AGC.")
AdamWAutoClip = policy_optimizer_class(torch.optim.AdamW, "autoclip", "AdamWAutoClip", "torch.optim.AdamW behind AutoClip.")
AdamWZClip = policy_optimizer_class(torch.optim.AdamW, "zclip", "AdamWZClip", "torch.optim.AdamW behind ZClip.")
