"""The fused update kernels (:mod:`optim.fused`) against the foreach kernels.

On CPU the Triton kernels run through the Triton interpreter. ``triton.jit`` reads
``TRITON_INTERPRET`` when a kernel is *defined*, so the ``interpreted`` fixture sets it and
reloads :mod:`optim.fused` (and reloads it back afterwards, so the sm_90 compile check and
the GPU tests see real kernels). Tensors are small: the interpreter runs each program in
numpy. The ``gpu`` tests compare on CUDA, check that a step never synchronises, and
capture a step in a CUDA graph.
"""

from __future__ import annotations

import copy
import importlib
import inspect
import re

import pytest
import torch

from optim import ClippedSGD, ClippedSSTM
from optim.clipping import CLIPPING_KINDS, global_norm, tensor_norms

# The modules (``optim`` re-exports the functionals under the same names).
sgd_module = importlib.import_module("optim.clipped_sgd")
sstm_module = importlib.import_module("optim.clipped_sstm")

triton = pytest.importorskip("triton")

# Sizes exercise full blocks (BLOCK = 2048), a tail, a tensor of exactly one block, tiny
# tensors and a channels_last conv weight (dense, not contiguous).
SHAPES = [(4100,), (2048,), (7, 5), (3,), (8, 3, 3, 3)]
F64 = torch.float64


@pytest.fixture
def fused(monkeypatch):
    """:mod:`optim.fused` with its kernels built for the Triton interpreter."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    module = importlib.reload(importlib.import_module("optim.fused"))
    assert module.INTERPRETED
    yield module
    monkeypatch.undo()
    importlib.reload(module)


def _tensors(dtype, seed=0, scale=1.0, device="cpu"):
    gen = torch.Generator().manual_seed(seed)
    out = []
    for shape in SHAPES:
        t = (torch.randn(shape, generator=gen) * scale).to(device=device, dtype=dtype)
        out.append(t.contiguous(memory_format=torch.channels_last) if t.ndim == 4 else t)
    return out


def _measure(grads):
    norms = tensor_norms(grads)
    total = global_norm(norms)
    return dict(norms=norms, total_norm=total, applied=torch.isfinite(total))


def _grads(dtype, bad, device="cpu"):
    grads = _tensors(dtype, seed=1, scale=3.0, device=device)
    if bad is not None:
        grads[0][17] = bad  # in a full block: must not reach any output
    return grads


def _clone(ts):
    return None if ts is None else [t.clone(memory_format=torch.preserve_format) for t in ts]


def _assert_close(actual, expected, dtype):
    """float32: as the foreach kernels, to float rounding. bfloat16: ``expected`` is the
    float64 result, and the fused kernel (float32 inside, one rounding per output) is
    within half an ulp (2^-8 relative) of it on the GPU, which rounds to nearest; the
    Triton interpreter's float32 -> bfloat16 cast truncates, so one ulp there. (The foreach
    path rounds every intermediate to bfloat16 and is further off.)"""
    on_cpu = actual[0].device.type == "cpu"
    for a, e in zip(actual, expected):
        if dtype == torch.bfloat16:
            torch.testing.assert_close(a.double(), e.double(), rtol=1.001 * 2 ** (-7 if on_cpu else -8), atol=1e-6)
        else:
            torch.testing.assert_close(a, e, rtol=1e-6, atol=1e-6)


SGD_CONFIGS = [
    dict(momentum=0.0, weight_decay=0.0, average=False),
    dict(momentum=0.9, weight_decay=1e-2, average=True),
    dict(momentum=0.0, weight_decay=1e-2, average=True),
]


def _run_sgd(functional, dtype, clipping, config, bad=None, device="cpu", compute=None, **extra):
    """One clipped-SGD step on fixed tensors of ``dtype`` (computed in ``compute``, e.g.
    float64 for the oracle); returns (x, b, x̄ flattened, ‖clip(g)‖)."""
    make = lambda seed, scale=1.0: [t.to(compute or dtype) for t in _tensors(dtype, seed, scale, device)]  # noqa: E731
    params, grads = make(0), [g.to(compute or dtype) for g in _grads(dtype, bad, device)]
    buffers = make(2) if config["momentum"] else None
    averages = make(3) if config["average"] else None
    measured = _measure(grads)
    clipped = functional(
        params, grads, buffers, averages, lr=0.1, clip_threshold=2.0, momentum=config["momentum"],
        weight_decay=config["weight_decay"], clipping=clipping,
        average_weight=0.25 * measured["applied"].to(F64), **measured, **extra,  # 0 when skipped, as the class does
    )  # fmt: skip
    return [t for ts in (params, buffers, averages) if ts is not None for t in ts], clipped


def _run_sstm(functional, dtype, clipping, bad=None, device="cpu", compute=None, **extra):
    """One clipped-SSTM step; returns (x, y, z flattened, ‖clip(g)‖)."""
    params, ys, zs = ([t.to(compute or dtype) for t in _tensors(dtype, s, device=device)] for s in (0, 2, 3))
    grads = [g.to(compute or dtype) for g in _grads(dtype, bad, device)]
    measured = _measure(grads)
    scalar = lambda v: torch.tensor(v, dtype=F64, device=device)  # noqa: E731 - the optimizer's float64 schedule
    clipped = functional(
        params, grads, ys, zs, alpha=scalar(0.3), clip_threshold=scalar(2.5), y_weight=0.4 * measured["applied"].to(F64),
        x_weight=scalar(0.7), clipping=clipping, **measured, **extra,
    )  # fmt: skip
    return params + ys + zs, clipped


def _check(run, functional, fused_functional, dtype, clipping, device="cpu", **kwargs):
    """The fused result against the foreach kernels (float32) or float64 (bfloat16)."""
    compute = F64 if dtype == torch.bfloat16 else None
    expected, expected_norm = run(functional, dtype, clipping, device=device, compute=compute, foreach=True, **kwargs)
    actual, actual_norm = run(fused_functional, dtype, clipping, device=device, **kwargs)
    _assert_close(actual, expected, dtype)
    if clipping == "norm":
        assert actual_norm is None and expected_norm is None
        return
    if compute is None:
        assert actual_norm.dtype == expected_norm.dtype
    torch.testing.assert_close(actual_norm.double(), expected_norm.double(), rtol=1e-5, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("config", SGD_CONFIGS, ids=["plain", "momentum-wd-avg", "wd-avg"])
@pytest.mark.parametrize("clipping", CLIPPING_KINDS)
def test_clipped_sgd_matches_foreach(fused, clipping, config, dtype):
    _check(_run_sgd, sgd_module.clipped_sgd, fused.fused_clipped_sgd, dtype, clipping, config=config)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("clipping", CLIPPING_KINDS)
def test_clipped_sstm_matches_foreach(fused, clipping, dtype):
    _check(_run_sstm, sstm_module.clipped_sstm, fused.fused_clipped_sstm, dtype, clipping)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # numpy, inside the interpreter
@pytest.mark.parametrize("bad", [float("inf"), float("nan")], ids=["inf", "nan"])
@pytest.mark.parametrize("clipping", CLIPPING_KINDS)
def test_skipped_step_changes_nothing(fused, clipping, bad):
    """A non-finite gradient (masked before any arithmetic: 0·inf is NaN) leaves x, b, x̄,
    y and z bit-exactly as they were; clipped-SSTM's x is re-derived from y and z."""
    actual, _ = _run_sgd(fused.fused_clipped_sgd, torch.float32, clipping, SGD_CONFIGS[1], bad)
    before = [t for seed in (0, 2, 3) for t in _tensors(torch.float32, seed)]
    assert all(torch.equal(a, b) for a, b in zip(actual, before))
    actual, _ = _run_sstm(fused.fused_clipped_sstm, torch.float32, clipping, bad)
    expected, _ = _run_sstm(sstm_module.clipped_sstm, torch.float32, clipping, bad, foreach=True)
    assert all(torch.equal(a, b) for a, b in zip(actual[len(SHAPES):], before[len(SHAPES):]))
    _assert_close(actual, expected, torch.float32)


def _use_fused(monkeypatch, fused):
    """Route the optimizers' functional calls to the fused kernels (what ``fused=True`` does
    once the integration patch is applied)."""

    def route(fn):
        return lambda *args, foreach=True, fused=False, **kwargs: fn(*args, **kwargs)

    monkeypatch.setattr(sgd_module, "clipped_sgd", route(fused.fused_clipped_sgd))
    monkeypatch.setattr(sstm_module, "clipped_sstm", route(fused.fused_clipped_sstm))


OPTIMIZERS = [
    (ClippedSGD, [dict(lr=0.05, momentum=0.9, weight_decay=1e-2), dict(lr=0.1)],
     dict(lr=0.1, clip_level=0.5, average=True)),
    (ClippedSSTM, [dict(weight_decay=1e-2), dict()], dict(lr=0.5, L=2.0, clip_level=0.3, nu=0.5, max_ratio=0.9)),
]


def _train(opt_cls, groups, shared, clipping, steps=5):
    gen = torch.Generator().manual_seed(5)
    params = [torch.nn.Parameter(t) for t in _tensors(torch.float32)]
    opt = opt_cls([dict(g, params=params[i::2]) for i, g in enumerate(groups)], clipping=clipping, **shared)
    for k in range(steps):
        for p in params:  # gradients laid out like their parameters, as autograd makes them
            g = torch.randn(p.shape, generator=gen) * 2
            p.grad = g.contiguous(memory_format=torch.channels_last) if p.ndim == 4 else g
        if k == 3:
            params[2].grad[0, 0] = float("inf")  # a skipped step in the middle
        opt.step()
    return params, opt


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # 0·inf on the skipped step
@pytest.mark.parametrize("clipping", CLIPPING_KINDS)
@pytest.mark.parametrize("opt_cls, groups, shared", OPTIMIZERS, ids=["clipped_sgd", "clipped_sstm"])
def test_optimizers_through_the_fused_path(fused, monkeypatch, opt_cls, groups, shared, clipping):
    """Several steps, two parameter groups, one skipped step: parameters, evaluation point
    and step statistics as the foreach path gives them."""
    params_ref, opt_ref = _train(opt_cls, groups, shared, clipping)
    _use_fused(monkeypatch, fused)
    params, opt = _train(opt_cls, groups, shared, clipping)
    _assert_close(params + opt.evaluation_point(), params_ref + opt_ref.evaluation_point(), torch.float32)
    stats, stats_ref = opt.step_stats(), opt_ref.step_stats()
    assert stats.keys() == stats_ref.keys() and opt.num_skipped_steps == 1
    for key in stats:
        torch.testing.assert_close(stats[key], stats_ref[key], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("opt_cls, groups, shared", OPTIMIZERS, ids=["clipped_sgd", "clipped_sstm"])
def test_fused_flag(fused, opt_cls, groups, shared):
    """``fused=True`` end to end (needs the integration patch in optim/)."""
    if "fused" not in inspect.signature(opt_cls.__init__).parameters:
        pytest.skip("the fused= integration is not applied to optim/ yet")
    params_ref, opt_ref = _train(opt_cls, groups, shared, "norm")
    params, opt = _train(lambda *a, **k: opt_cls(*a, fused=True, **k), groups, shared, "norm")
    _assert_close(params, params_ref, torch.float32)
    with pytest.raises((RuntimeError, ValueError), match="float64"):  # the kernels take fp32/bf16/fp16
        p = torch.nn.Parameter(torch.zeros(2, dtype=F64))
        p.grad = torch.ones_like(p)
        opt_cls([p], fused=True, **{**groups[0], **shared}).step()


def test_mixed_dtypes_launch_per_dtype(fused):
    params = _tensors(torch.float32)[:2] + _tensors(torch.bfloat16)[2:]
    grads = [g.to(p.dtype) for p, g in zip(params, _grads(torch.float32, None))]
    kwargs = dict(lr=0.1, clip_threshold=1.0, momentum=0.0, clipping="coordinate_wise")
    expected = [p.double() for p in params]  # the float64 oracle, as for bfloat16 above
    grads64 = [g.double() for g in grads]
    expected_norm = sgd_module.clipped_sgd(expected, grads64, None, None, **kwargs, **_measure(grads64))
    actual_norm = fused.fused_clipped_sgd(params, grads, None, None, **kwargs, **_measure(grads))
    _assert_close(params, expected, torch.bfloat16)
    torch.testing.assert_close(actual_norm.double(), expected_norm, rtol=1e-5, atol=0)


def test_plan_cache_follows_addresses(fused):
    params, grads = _tensors(torch.float32), _grads(torch.float32, None)
    kwargs = dict(lr=0.1, clip_threshold=1.0, **_measure(grads))
    fused._cache.clear()
    fused.fused_clipped_sgd(params, grads, None, None, **kwargs)
    fused.fused_clipped_sgd(params, grads, None, None, **kwargs)
    assert len(fused._cache) == 1  # same addresses: the cached table
    grads = [g.clone() for g in grads]  # new gradients (zero_grad(set_to_none=True))
    expected = _clone(params)
    sgd_module.clipped_sgd(expected, grads, None, None, foreach=True, **kwargs)
    fused.fused_clipped_sgd(params, grads, None, None, **kwargs)
    assert len(fused._cache) == 2
    _assert_close(params, expected, torch.float32)


def test_layout_errors(fused):
    base = torch.randn(6, 8)
    view = base[:, :4]  # not dense
    grads = [torch.randn(6, 4)]
    with pytest.raises(ValueError, match="not dense"):
        fused.fused_clipped_sgd([view], grads, None, None, lr=0.1, clip_threshold=1.0, **_measure(grads))
    weight = torch.randn(4, 3, 2, 2).contiguous(memory_format=torch.channels_last)
    grads = [torch.randn(4, 3, 2, 2)]  # contiguous: laid out unlike its parameter
    with pytest.raises(ValueError, match="strides"):
        fused.fused_clipped_sgd([weight], grads, None, None, lr=0.1, clip_threshold=1.0, **_measure(grads))
    with pytest.raises(ValueError, match="Invalid clipping"):
        fused.fused_clipped_sgd([weight], [weight.clone()], None, None, lr=0.1, clip_threshold=1.0, clipping="l1",
                                **_measure([weight]))


def test_support_and_backend_selection(fused):
    module = fused
    assert module.fused_support([torch.zeros(3)]) is None
    assert "float64" in module.fused_support([torch.zeros(3, dtype=F64)])
    with pytest.raises(ValueError, match="Invalid fused backend"):
        module.set_backend("cuda")
    module.set_backend("compile")
    try:
        assert module.fused_support([torch.zeros(3, dtype=F64)]) is None  # inductor handles any dtype
    finally:
        module.set_backend("triton")


def test_cpu_without_interpreter_is_refused(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    module = importlib.reload(importlib.import_module("optim.fused"))
    reason = module.fused_support([torch.zeros(3)])
    assert reason is not None and "CUDA" in reason and "TRITON_INTERPRET" in reason


def test_kernels_compile_to_vectorised_sm90_code():
    """The real compiler (no GPU needed): every kernel variant lowers for sm_90, and full
    blocks use 128-bit loads and stores (``ld.global.v4``)."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from triton.runtime.jit import mangle_type

    module = importlib.reload(importlib.import_module("optim.fused"))
    if module.INTERPRETED:
        pytest.skip("TRITON_INTERPRET is set for the whole session")
    tl = triton.language
    t = lambda dtype=torch.float32: torch.zeros(1, dtype=dtype)  # noqa: E731 - argument stand-ins
    i64 = torch.int64
    head = [t(i64)] * 4 + [62, t(torch.bool), t(), t()]
    variants = [
        (module._clipped_sgd_kernel, head + [t(), t(F64), t(), 1.0, 0.1, 0.9, 0.01],
         dict(CLIPPING=2, LEVEL_PTR=False, MOMENTUM=True, WEIGHT_DECAY=True, AVERAGE=True, X_DT=tl.float32,
              G_DT=tl.float32)),
        (module._clipped_sgd_kernel, head + [t(), t(F64), t(), 1.0, 0.1, 0.0, 0.0],
         dict(CLIPPING=0, LEVEL_PTR=False, MOMENTUM=False, WEIGHT_DECAY=False, AVERAGE=False, X_DT=tl.bfloat16,
              G_DT=tl.bfloat16)),
        (module._clipped_sstm_kernel, head + [t(F64)] * 4 + [t(), 0.0],
         dict(CLIPPING=0, LEVEL_PTR=True, X_DT=tl.float32, G_DT=tl.float32)),
        (module._clipped_sstm_kernel, head + [t(F64)] * 4 + [t(), 0.0],
         dict(CLIPPING=1, LEVEL_PTR=True, X_DT=tl.bfloat16, G_DT=tl.bfloat16)),
    ]  # fmt: skip
    for kernel, args, constexprs in variants:
        constexprs = dict(constexprs, BLOCK=module.BLOCK, ALIGNED=True)
        signature = {name: mangle_type(a) for name, a in zip(kernel.arg_names, args)}
        signature.update({name: "constexpr" for name in constexprs})
        try:
            compiled = triton.compile(
                ASTSource(kernel, signature, constexprs=constexprs),
                target=GPUTarget("cuda", 90, 32),
                options={"num_warps": module.NUM_WARPS},
            )
        except (RuntimeError, FileNotFoundError) as err:  # a triton build without the NVIDIA toolchain
            pytest.skip(f"cannot compile for sm_90 here: {err}")
        ptx = compiled.asm["ptx"]
        assert re.search(r"ld\.global(\.\w+)*\.v4", ptx) and re.search(r"st\.global(\.\w+)*\.v4", ptx), constexprs


@pytest.mark.slow
def test_compile_backend_matches_foreach():
    """``set_backend("compile")``: torch.compile of the foreach functional (inductor on CPU)."""
    module = importlib.import_module("optim.fused")
    module.set_backend("compile")
    try:
        for clipping in ("norm", "coordinate_wise"):
            _check(_run_sgd, sgd_module.clipped_sgd, module.fused_clipped_sgd, torch.float32, clipping,
                   config=SGD_CONFIGS[1])
            _check(_run_sstm, sstm_module.clipped_sstm, module.fused_clipped_sstm, torch.float32, clipping)
    finally:
        module.set_backend("triton")


# ------------------------------------------------------------------------------- GPU
gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _cuda_optimizer(opt_cls, monkeypatch, fused_module, **kwargs):
    """An optimizer on ResNet-18-like tensors taking the fused path (flag or routing)."""
    import torchvision

    torch.manual_seed(0)
    params = [torch.nn.Parameter(p.detach().cuda()) for p in torchvision.models.resnet18().parameters()]
    if "fused" in inspect.signature(opt_cls.__init__).parameters:
        kwargs["fused"] = True
    else:
        _use_fused(monkeypatch, fused_module)
    return params, opt_cls(params, **kwargs), kwargs


GPU_OPTIMIZERS = [
    (ClippedSGD, dict(lr=0.05, clip_level=0.1, momentum=0.9, clipping="coordinate_wise", average=True)),
    (ClippedSSTM, dict(lr=0.01, L=10.0, clip_level=1.0, max_ratio=0.99)),
]


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("clipping", CLIPPING_KINDS)
def test_cuda_matches_foreach(clipping, dtype):
    module = importlib.reload(importlib.import_module("optim.fused"))
    for config in SGD_CONFIGS:
        _check(_run_sgd, sgd_module.clipped_sgd, module.fused_clipped_sgd, dtype, clipping, "cuda", config=config)
    _check(_run_sstm, sstm_module.clipped_sstm, module.fused_clipped_sstm, dtype, clipping, "cuda")
    for bad in (float("inf"), float("nan")):
        _check(_run_sstm, sstm_module.clipped_sstm, module.fused_clipped_sstm, torch.float32, clipping, "cuda",
               bad=bad)


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("opt_cls, kwargs", GPU_OPTIMIZERS, ids=["clipped_sgd", "clipped_sstm"])
def test_cuda_step_is_sync_free_and_graph_capturable(monkeypatch, opt_cls, kwargs):
    module = importlib.reload(importlib.import_module("optim.fused"))
    params, opt, kwargs = _cuda_optimizer(opt_cls, monkeypatch, module, **kwargs)
    gen = torch.Generator(device="cuda").manual_seed(0)
    sources = [torch.randn(p.shape, device="cuda", generator=gen) * 1e-2 for p in params]

    def step(optimizer, tensors):
        for p, g in zip(tensors, sources):
            p.grad = g * 1.0  # fresh gradients each step (inside a graph: from its private pool)
        optimizer.step()

    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):  # the first step builds the state and the launch table
            step(opt, params)
        torch.cuda.synchronize()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    # An eager copy to compare with, then capture one step of the original and replay it.
    ref_params = [torch.nn.Parameter(p.detach().clone()) for p in params]
    flag = {"fused": False} if "fused" in kwargs else {}  # with routing: the fused path too
    ref = opt_cls(ref_params, **{**kwargs, **flag})
    ref.load_state_dict(copy.deepcopy(opt.state_dict()))
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # warm-up on a side stream, as torch.cuda.graphs asks
        step(opt, params)
        step(ref, ref_params)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):  # new gradient addresses: a launch table built during capture
        step(opt, params)
    for _ in range(3):
        graph.replay()
        step(ref, ref_params)
    torch.cuda.synchronize()
    for p, q in zip(params, ref_params):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    for key, value in ref.global_state.items():
        torch.testing.assert_close(opt.global_state[key], value, rtol=1e-5, atol=1e-7)
