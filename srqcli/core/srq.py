"""The Semi-Relaxed Quantization (SRQ) autograd function (docs/method.md §2–4).

Forward is the mode of RQ's categorical distribution over the grid, which for logistic
noise is round-to-nearest and clip: ``x̂ = α·clamp(round(x/α), k_min, k_max)``. It equals
the inference quantizer and ONNX ``QuantizeLinear``/``DequantizeLinear`` (round half to even).

Backward is the multi-class straight-through estimator: the gradient of the surrogate
``s = Σ_i (π_i/π_m)·α·k_i`` with ``π_i = P(x + ε ∈ bin_i)``, ``ε ~ Logistic(0, σ)``.

Why the *edge form*. Writing ``F_j = sigmoid((α(j+½) - x)/σ)`` for the edge between codes
``j`` and ``j+1``, Abel summation gives the exact identity

    S := Σ_i k_i·π_i = k_max − Σ_j F_j

so every derivative of ``s`` is a sum over bin *edges* of terms in
``φ_j = F_j(1−F_j)``, which decay like ``exp(−distance/σ)``. We evaluate the sums only over
the ``2w+2`` edges around the mode ``m`` and count the edges further above as ``F = 1``
(further below, ``F = 0``).
Unlike truncating ``Σ_i r_i α k_i`` to a window (whose error grows with ``|k|`` at the window
ends), the truncation error here is independent of the code, so one window size serves all
bit-widths: measured against the full-grid autograd reference (``tests/core``) the relative
error is < 1e-3 with the window :func:`default_window` picks from σ/α, and exact (≤ 1e-12
in float64) when the window covers the grid.

Memory: the forward saves ``x`` (for weights the parameter itself; for activations the tensor
the producing layer already keeps), never a tensor of size ``N·2^b``. The backward is one
elementwise pass that ``torch.compile`` fuses into a single loop (see :func:`set_fused`).

``π_m`` handling (``pi_mode``), see docs/method.md §4:
    ``"detach"`` (default): ``s = α·S/sg(π_m)``. The x-gradient is
        ``α/(σ·π_m)·Σ_j φ_j > 0``: it never flips the sign of the upstream gradient.
    ``"diff"``: ``s = α·S/π_m`` with ``π_m`` differentiated (the literal paper reading).
    ``"centred"``: ``s = α·m + α·(S − m)/π_m`` (translation-invariant in ``m``).

Under a whole-model ``torch.compile`` (docs/method-decisions.md, "One graph under
torch.compile") the function is traced into the model's graph: the codes go through the opaque
custom op ``srq::round_clip`` (so no compiler rewrites the division or the rounding, on any
device), the backward is traced and fused with its neighbours instead of calling the
per-function compiled kernel, and a window left to :func:`srq_quantize` is the one for the cap
σ = α/2, so a change of σ never recompiles. Eager calls skip the custom op: its Python
dispatch costs ~0.1 ms per call, and its implementation is the same function.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from srqcli.core.names import PI_MODES

#: Largest σ/α any quantizer allows (:mod:`srqcli.nn.quantizer` caps σ at α/2).
SIGMA_RATIO_CAP = 0.5

#: Smallest ``π_m`` used in a division. With ``σ ≤ α/2`` the mode's probability is never
#: below ``sigmoid(1) − sigmoid(−1) ≈ 0.46``; the guard only matters for extreme inputs.
_PI_FLOOR = 1e-6


def default_window(sigma_over_alpha: float) -> int:
    """Half-width ``w`` of the edge window for the current (largest) ``σ/α``.

    Chosen from the truncation error measured against the full-grid reference over bits
    2/3/4/8, signed/unsigned, per-tensor/per-channel and all three π modes
    (``tests/core/test_srq_function.py``): the worst elementwise error of the x, α and σ
    gradients stays < 1e-3 with w=2 up to σ = 0.2·α, w=3 up to 0.3·α, w=4 up to 0.4·α and
    w=5 up to the cap α/2. The σ-gradient is the binding one (each missed edge is weighted by
    its distance): at σ = α/4 w=2 is borderline (0.9–1.03e-3 depending on the sample).
    """
    for limit, w in ((0.2, 2), (0.3, 3), (0.4, 4)):
        if sigma_over_alpha <= limit:
            return w
    return 5


def srq_forward_codes(x: Tensor, alpha: Tensor, kmin: Tensor | int, kmax: Tensor | int) -> Tensor:
    """Integer codes (as floats) of the SRQ forward: ``clamp(round(x/α), k_min, k_max)``.

    In place on the quotient, so the training forward and backward allocate one tensor of
    ``x``'s size for the codes, not three.
    """
    return (x / alpha).round_().clamp_(kmin, kmax)


def _round_clip(x: Tensor, alpha: Tensor, kmin_t: Tensor | None, kmax_t: Tensor | None,
                kmin: int, kmax: int) -> Tensor:
    """:func:`srq_forward_codes` with the bounds as the op's schema takes them: the tensor when
    given, else the int (a schema cannot say "tensor or int")."""
    return srq_forward_codes(x, alpha, kmin if kmin_t is None else kmin_t,
                             kmax if kmax_t is None else kmax_t)


#: The codes as an op compilers treat as a black box (:func:`exact_codes`). Its fake (meta)
#: implementation is the same code: on fake tensors it gives the exact shape, dtype and strides.
round_clip_op = torch.library.custom_op(
    "srq::round_clip", _round_clip, mutates_args=(),
    schema="(Tensor x, Tensor alpha, Tensor? kmin_t, Tensor? kmax_t, int kmin, int kmax) -> Tensor")
round_clip_op.register_fake(_round_clip)


def exact_codes(x: Tensor, alpha: Tensor, kmin: Tensor | int, kmax: Tensor | int) -> Tensor:
    """:func:`srq_forward_codes`, through ``srq::round_clip`` while compiling.

    Inductor's Triton code divides approximately (``div.full.f32``, up to 2 ulp), which moves
    ties and near-ties to another code than eager torch and onnxruntime's ``QuantizeLinear``;
    inside the opaque op the eager kernels run, on every device.
    """
    if not torch.compiler.is_compiling():
        return srq_forward_codes(x, alpha, kmin, kmax)
    tensors = [b if isinstance(b, Tensor) else None for b in (kmin, kmax)]
    ints = [0 if isinstance(b, Tensor) else int(b) for b in (kmin, kmax)]
    return round_clip_op(x, alpha, *tensors, *ints)


def _edge_sums(x: Tensor, alpha: Tensor, sigma: Tensor, m: Tensor,
               kmin: Tensor | int, kmax: Tensor | int, w: int) -> tuple[Tensor, ...]:
    """Sums over the 2w+2 edges around ``m`` needed by every gradient of the surrogate.

    Returns ``S``, ``S_x``, ``S_σ``, ``S_α`` (value and partial derivatives of
    ``S = Σ_i k_i π_i``), and ``π_m`` with its partials ``P_x``, ``P_σ``, ``P_α``.
    Edge ``j`` lies between codes ``j`` and ``j+1`` at ``α(j+½)``; it exists iff
    ``k_min ≤ j < k_max``.
    """
    inv_sigma = 1.0 / sigma
    sum_f = torch.zeros_like(x)
    sum_phi = torch.zeros_like(x)
    sum_phi_a = torch.zeros_like(x)
    sum_phi_c = torch.zeros_like(x)
    f_up = f_lo = phi_up = phi_lo = phi_a_up = phi_a_lo = phi_c_up = phi_c_lo = None
    for off in range(-w - 1, w + 1):
        j = m + off
        valid = (j >= kmin) & (j < kmax)
        c = j + 0.5
        a = (alpha * c - x) * inv_sigma
        f = torch.sigmoid(a)
        phi = torch.where(valid, f * (1.0 - f), 0.0)
        f = torch.where(valid, f, 0.0)
        sum_f = sum_f + f
        sum_phi = sum_phi + phi
        sum_phi_a = sum_phi_a + phi * a
        sum_phi_c = sum_phi_c + phi * c
        if off == 0:  # upper edge of the mode's bin (absent at k_max: F = 1)
            f_up = torch.where(valid, f, 1.0)
            phi_up, phi_a_up, phi_c_up = phi, phi * a, phi * c
        elif off == -1:  # lower edge (absent at k_min: F = 0)
            f_lo = f
            phi_lo, phi_a_lo, phi_c_lo = phi, phi * a, phi * c
    # Edges above the window have F ≈ 1 (those below, F ≈ 0): max(0, k_max−1−m−w) of them.
    above = torch.clamp(kmax - 1 - m - w, min=0)
    s = kmax - above - sum_f
    s_x = sum_phi * inv_sigma
    s_sigma = sum_phi_a * inv_sigma
    s_alpha = -sum_phi_c * inv_sigma
    pi_m = f_up - f_lo
    p_x = -(phi_up - phi_lo) * inv_sigma
    p_sigma = -(phi_a_up - phi_a_lo) * inv_sigma
    p_alpha = (phi_c_up - phi_c_lo) * inv_sigma
    return s, s_x, s_sigma, s_alpha, pi_m, p_x, p_sigma, p_alpha


def srq_backward_math(grad: Tensor, x: Tensor, alpha: Tensor, sigma: Tensor, m: Tensor,
                      kmin: Tensor | int, kmax: Tensor | int, w: int,
                      pi_mode: str) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients of the windowed surrogate w.r.t. ``x``, ``α`` and ``σ`` at the codes ``m``.

    Elementwise math followed by the reductions to the shapes of ``α`` and ``σ``, written so
    that ``torch.compile`` fuses all of it into one pass over ``x``. ``m`` comes in from
    :func:`srq_forward_codes` (see :class:`_SRQFunction` for why it is not recomputed here).
    """
    s, s_x, s_sigma, s_alpha, pi_m, p_x, p_sigma, p_alpha = _edge_sums(
        x, alpha, sigma, m, kmin, kmax, w)
    pi_m = torch.clamp(pi_m, min=_PI_FLOOR)
    scale = alpha / pi_m
    if pi_mode == "detach":
        d_x = scale * s_x
        d_sigma = scale * s_sigma
        d_alpha = s / pi_m + scale * s_alpha
    else:
        # Both remaining forms are α·(S − c)/π_m (+ α·c): c = 0 ("diff") or c = m ("centred").
        centre = m if pi_mode == "centred" else torch.zeros_like(m)
        rest = (s - centre) / pi_m
        d_x = scale * (s_x - rest * p_x)
        d_sigma = scale * (s_sigma - rest * p_sigma)
        d_alpha = centre + rest + scale * (s_alpha - rest * p_alpha)
    return (grad * d_x, (grad * d_alpha).sum_to_size(alpha.shape),
            (grad * d_sigma).sum_to_size(sigma.shape))


_compiled: dict[str, Callable[..., Any]] = {}
_use_fused = os.environ.get("SRQ_FUSED", "1") != "0"


class FusionFallbackWarning(RuntimeWarning):
    """The fused backward could not be compiled; the process continues with the eager one.

    Its own category so that the test suite turns it into an error (pyproject.toml's
    ``filterwarnings``): a fusion that fails in tests fails the test, not silently its speed.
    """


def set_fused(enabled: bool) -> None:
    """Use the ``torch.compile``-fused backward (default) or the eager one.

    Eager runs the 2w+2-edge loop as separate kernels (5–6× float step time on CPU in the
    prototype); fused it is one pass. Tests of the math use eager to stay fast to start.
    """
    global _use_fused
    _use_fused = enabled


def _run(fn: Callable[..., Any], *args: Any) -> Any:
    """Call ``fn``, through its own ``torch.compile`` when fusing is on and the caller is eager.

    Inside a compiled model ``fn`` is traced like the rest of it (a compiled function called
    there would be a nested compile). Tensors are passed detached: dynamo guards on the type,
    and a weight's ``nn.Parameter`` would otherwise compile its own specialisation.
    If compiling fails (no C++ compiler, an unsupported platform, the recompile limit) srq
    warns with the reason (:class:`FusionFallbackWarning`) and runs eagerly from then on:
    slower, same numbers. A genuine error in the math re-raises from eager.
    """
    global _use_fused
    if torch.compiler.is_compiling():
        return fn(*args)
    if _use_fused:
        if fn.__name__ not in _compiled:
            # One specialisation per (window, π mode, scalar/tensor bounds, α rank): a model
            # has a handful, more than dynamo's default limit of 8 per function.
            torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
            _compiled[fn.__name__] = torch.compile(fn, dynamic=True, fullgraph=True)
        detached = [a.detach() if isinstance(a, Tensor) else a for a in args]
        try:
            return _compiled[fn.__name__](*detached)
        except Exception as exc:  # noqa: BLE001 - any compiler failure: fall back, say why
            first_line = next(iter(str(exc).strip().splitlines()), "")
            reason = f"{type(exc).__name__}: {first_line}" if first_line else type(exc).__name__
            warnings.warn(f"torch.compile of the SRQ backward failed ({reason}); this process "
                          "runs it eagerly from now on (same numbers, slower). Set SRQ_FUSED=0 "
                          "to skip compiling.", FusionFallbackWarning, stacklevel=2)
            _use_fused = False
    return fn(*args)


def _srq_grads(grad: Tensor, x: Tensor, alpha: Tensor, sigma: Tensor, kmin: Tensor | int,
               kmax: Tensor | int, window: int, pi_mode: str) -> tuple[Tensor, Tensor, Tensor]:
    """The backward of SRQ at the forward's codes (recomputed: cheaper than saving them)."""
    m = exact_codes(x, alpha, kmin, kmax)
    return _run(srq_backward_math, grad.contiguous(), x, alpha, sigma, m, kmin, kmax, window,
                pi_mode)


class _SRQFunction(torch.autograd.Function):
    """Forward ``α·codes``, backward the fused edge sums: the eager entry point.

    The codes ``clamp(round(x/α))`` are always computed by eager torch kernels (directly, or
    inside an opaque op while compiling), never by a generated kernel: Triton lowers float32
    ``/`` to ``div.full.f32`` (up to 2 ulp), so a compiled ``round(x/α)`` rounds ties and
    near-ties differently from eager torch and from onnxruntime's ``QuantizeLinear``. Measured
    on an H100 (torch 2.11, Triton 3.6): the compiled forward missed round-and-clip at 3, 4
    and 8 bits (tests/core/test_srq_cuda.py). The backward gets the same codes, so its window
    sits on the forward's mode.
    """

    @staticmethod
    def forward(ctx, x: Tensor, alpha: Tensor, sigma: Tensor, kmin: Tensor | int,
                kmax: Tensor | int, window: int, pi_mode: str) -> Tensor:
        ctx.save_for_backward(x, alpha, sigma,
                              *(t for t in (kmin, kmax) if isinstance(t, Tensor)))
        ctx.kmin_t = isinstance(kmin, Tensor)
        ctx.kmax_t = isinstance(kmax, Tensor)
        ctx.kmin, ctx.kmax = (None if ctx.kmin_t else kmin), (None if ctx.kmax_t else kmax)
        ctx.window, ctx.pi_mode = window, pi_mode
        return srq_forward_codes(x, alpha, kmin, kmax).mul_(alpha)

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, alpha, sigma, *bounds = ctx.saved_tensors
        kmin = bounds.pop(0) if ctx.kmin_t else ctx.kmin
        kmax = bounds.pop(0) if ctx.kmax_t else ctx.kmax
        return *_srq_grads(grad, x, alpha, sigma, kmin, kmax, ctx.window, ctx.pi_mode), \
            None, None, None, None


def _quantize(x: Tensor, alpha: Tensor, sigma: Tensor, kmin_t: Tensor | None,
              kmax_t: Tensor | None, kmin: int, kmax: int, window: int, pi_mode: str) -> Tensor:
    """``α·codes``: the forward of ``srq::quantize`` and its fake implementation."""
    return _round_clip(x, alpha, kmin_t, kmax_t, kmin, kmax).mul_(alpha)


#: SRQ as one op, the compiled entry point: dynamo records a single node per quantizer
#: (tracing :class:`_SRQFunction` costs it ~1 s per call: the 2w+2-edge backward is speculated
#: op by op), the forward stays opaque (exact codes on every device), and AOTAutograd traces
#: the registered backward, which inductor fuses with its neighbours.
quantize_op = torch.library.custom_op(
    "srq::quantize", _quantize, mutates_args=(),
    schema="(Tensor x, Tensor alpha, Tensor sigma, Tensor? kmin_t, Tensor? kmax_t, int kmin, "
           "int kmax, int window, str pi_mode) -> Tensor")
quantize_op.register_fake(_quantize)


def _setup_quantize(ctx, inputs: tuple[Any, ...], output: Tensor) -> None:
    x, alpha, sigma, kmin_t, kmax_t, kmin, kmax, window, pi_mode = inputs
    ctx.save_for_backward(x, alpha, sigma, kmin_t, kmax_t)
    ctx.kmin, ctx.kmax, ctx.window, ctx.pi_mode = kmin, kmax, window, pi_mode


def _quantize_backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:
    x, alpha, sigma, kmin_t, kmax_t = ctx.saved_tensors
    kmin = ctx.kmin if kmin_t is None else kmin_t
    kmax = ctx.kmax if kmax_t is None else kmax_t
    return *_srq_grads(grad, x, alpha, sigma, kmin, kmax, ctx.window, ctx.pi_mode), \
        None, None, None, None, None, None


quantize_op.register_autograd(_quantize_backward, setup_context=_setup_quantize)


def srq_quantize(x: Tensor, alpha: Tensor, sigma: Tensor, kmin: Tensor | int,
                 kmax: Tensor | int, *, window: int | None = None,
                 pi_mode: str = "detach") -> Tensor:
    """SRQ fake-quantization ``α·clamp(round(x/α), k_min, k_max)`` with the SRQ backward.

    Args:
        x: tensor to quantize.
        alpha: step, positive, broadcastable to ``x`` (scalar or per-channel).
        sigma: logistic noise scale, positive, same shape as ``alpha``.
        kmin, kmax: grid bounds; ints, or integer-valued float tensors broadcastable to
            ``x`` (per-element bounds are how DropBits' top-bit variant narrows the grid).
        window: edge-window half-width ``w``; ``None`` picks it from ``max(σ/α)`` (while
            compiling: from the cap :data:`SIGMA_RATIO_CAP`, so σ never recompiles).
        pi_mode: ``"detach"`` | ``"diff"`` | ``"centred"`` (module docstring).
    """
    if pi_mode not in PI_MODES:
        raise ValueError(f"pi_mode must be one of {PI_MODES}, got {pi_mode!r}")
    if window is None:
        window = default_window(SIGMA_RATIO_CAP if torch.compiler.is_compiling()
                                else float((sigma / alpha).detach().max()))
    if not torch.compiler.is_compiling():
        return _SRQFunction.apply(x, alpha, sigma, kmin, kmax, window, pi_mode)
    tensors = [b if isinstance(b, Tensor) else None for b in (kmin, kmax)]
    ints = [0 if isinstance(b, Tensor) else int(b) for b in (kmin, kmax)]
    return quantize_op(x, alpha, sigma, *tensors, *ints, window, pi_mode)


def full_grid_surrogate(x: Tensor, alpha: Tensor, sigma: Tensor, kmin: int, kmax: int,
                        pi_mode: str = "detach") -> Tensor:
    """Slow reference: SRQ with the surrogate built over *every* grid point by autograd.

    Materialises ``π`` of shape ``x.shape + (2^b,)``, the memory blow-up the windowed function
    avoids; used by tests and by the naive baseline in ``benchmarks/``. Value equals the SRQ
    forward; gradients are those of ``Σ_i r_i α k_i`` (or its centred form).
    """
    k = torch.arange(kmin, kmax + 1, dtype=x.dtype, device=x.device)
    xe = x.unsqueeze(-1)
    ae = alpha.unsqueeze(-1) if alpha.dim() else alpha
    se = sigma.unsqueeze(-1) if sigma.dim() else sigma
    upper = torch.sigmoid((ae * (k + 0.5) - xe) / se)
    lower = torch.sigmoid((ae * (k - 0.5) - xe) / se)
    upper = torch.where(k == kmax, torch.ones_like(upper), upper)
    lower = torch.where(k == kmin, torch.zeros_like(lower), lower)
    pi = upper - lower
    m = torch.clamp(torch.round(x / alpha), kmin, kmax)
    onehot = (k == m.unsqueeze(-1)).to(x.dtype)
    pi_m = (pi * onehot).sum(-1, keepdim=True)
    if pi_mode == "detach":
        pi_m = pi_m.detach()
    r = pi / pi_m
    if pi_mode == "centred":
        surrogate = alpha * m + (r * ae * (k - m.unsqueeze(-1))).sum(-1)
    else:
        surrogate = (r * ae * k).sum(-1)
    # Value exactly α·m; gradient exactly the surrogate's.
    return (alpha * m).detach() + (surrogate - surrogate.detach())
