"""The trainable quantizer modules (the shared base and SRQ's) and their frozen encoding.

Following AIMET's split, a :class:`Quantizer` holds what is *trained* (``log α``; SRQ adds
``log σ``) and :class:`~srqcli.core.encoding.Encoding` what is *frozen* (bits, signedness,
step): export, reports and eval read encodings and never touch training code. The baselines of
``srq quantize --method`` subclass :class:`Quantizer` in :mod:`srqcli.methods`.

Parametrisation (docs/method.md §1, §4): ``α = exp(log_α)`` is positive by construction (a negative
step is a known failure of LSQ re-implementations); ``σ = clamp(exp(log_σ), 0.05·α, 0.5·α)``.
The cap ``σ ≤ α/2`` keeps the hard-quantizer picture valid (unclamped σ grew to 0.7–2.5·α in
the prototype; ``quant.sigma_max`` lowers it, for the ablation only); the floor is a harmless
guard. After each optimizer step :meth:`SRQQuantizer.project_` pulls ``log_σ`` back into that
band so it cannot drift where its gradient is zero.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TypeVar

import torch
from torch import Tensor, nn

from srqcli.core import dropbits as db
from srqcli.core.encoding import Encoding
from srqcli.core.grid import IntGrid
from srqcli.core.srq import SIGMA_RATIO_CAP, default_window, srq_forward_codes, srq_quantize

SIGMA_MIN_RATIO = 0.05
SIGMA_MAX_RATIO = SIGMA_RATIO_CAP
LOG_ALPHA_BOUND = 30.0
T = TypeVar("T")


def mse_optimal_step(x: Tensor, grid: IntGrid, channel_axis: int | None = None,
                     candidates: int = 100) -> Tensor:
    """Step minimising ``‖x − α·clamp(round(x/α))‖²`` over a grid of candidates.

    The prototype found this initialisation better than LSQ's ``2·mean|x|/sqrt(k_max)``
    (docs/method.md §1). With ``channel_axis`` one step per channel (shape kept for broadcasting).
    """
    x = x.detach().float()
    if channel_axis is None:
        flat = x.reshape(1, -1)
    else:
        flat = x.transpose(0, channel_axis).reshape(x.shape[channel_axis], -1)
    # The largest useful step maps max|x| onto the *smaller* end of the grid (a signed grid
    # reaches only (2^(b−1)−1)·α on the positive side); with few elements rounding luck can
    # favour a step a little above it, hence the 1.25 margin.
    reach = min(abs(grid.kmin), grid.kmax) if grid.kmin < 0 else grid.kmax
    amax = flat.abs().amax(dim=1, keepdim=True).clamp_min(1e-8)
    top = 1.25 * amax / reach

    def errors(alphas: Tensor) -> Tensor:  # (rows, k) candidate steps → (rows, k) squared errors
        out = torch.empty_like(alphas)
        for i in range(alphas.shape[1]):
            a = alphas[:, i:i + 1]
            out[:, i] = ((srq_forward_codes(flat, a, grid.kmin, grid.kmax) * a - flat) ** 2).sum(1)
        return out

    # Coarse pass over (0, top], then fine passes around the 4 best coarse candidates: the MSE
    # is jagged in α at 8 bits (±3% between neighbouring coarse steps), so the best coarse
    # point is not always in the best valley.
    coarse = top * torch.linspace(0.01, 1.0, candidates, device=x.device)
    coarse_err = errors(coarse)
    width = top / candidates
    offsets = torch.linspace(-1.0, 1.0, 25, device=x.device)
    seeds = coarse.gather(1, coarse_err.topk(min(4, candidates), dim=1, largest=False).indices)
    fine = (seeds.unsqueeze(-1) + width.unsqueeze(-1) * offsets).flatten(1).clamp_min(1e-12)
    alphas = torch.cat([coarse, fine], dim=1)
    best = alphas.gather(1, torch.cat([coarse_err, errors(fine)], dim=1).argmin(1, keepdim=True))
    if channel_axis is None:
        return best.reshape(())
    shape = [1] * x.dim()
    shape[channel_axis] = -1
    return best.reshape(shape)


class Quantizer(nn.Module):
    """What every quantizer module shares, whatever its training math (SRQ or a baseline).

    A bit-width, a grid whose signedness is decided at calibration, and a step
    ``α = exp(log α)`` (positive by construction; a buffer when the method does not learn it).
    Subclasses implement :meth:`forward` and may extend :meth:`init_step` and :meth:`project_`;
    :meth:`encoding` is the frozen view export and reports read.

    Args:
        bits: bit-width ``b`` (2–8 in the CLI; the module accepts any ≥ 1).
        signed: signed grid (``None`` for activations: decided at calibration from the sign of
            the observed inputs).
        channels: number of channels for a per-channel step (``None``: per-tensor).
        channel_axis: axis of the channels in the quantized tensor.
        learn_step: ``log α`` is a parameter (else a buffer fixed at calibration).
    """

    #: Export reads integer codes ``clamp(round(w/α))`` of the layer weight; methods with
    #: non-uniform levels set this to ``False`` and export refuses them.
    uniform = True
    #: Calibration passes activation samples flattened; ``True``: as ``(channels, n)``.
    calibrates_per_channel = False
    #: The training forward differs from the deployed one (a relaxed or sampled value, not
    #: round-and-clip), so BatchNorm statistics are re-estimated after training.
    trains_other_forward = False

    def __init__(self, bits: int, signed: bool | None, *, channels: int | None = None,
                 channel_axis: int = 0, dims: int = 1, learn_step: bool = True) -> None:
        super().__init__()
        self.bits = bits
        self.signed_mode = signed  # None: decided from the calibration data
        self.channel_axis = channel_axis
        shape: tuple[int, ...] = ()
        if channels is not None:
            s = [1] * dims
            s[channel_axis] = channels
            shape = tuple(s)
        if learn_step:
            self.log_alpha = nn.Parameter(torch.zeros(shape))
        else:
            self.register_buffer("log_alpha", torch.zeros(shape))
        self.register_buffer("initialized", torch.tensor(False))
        self.register_buffer("signed_flag", torch.tensor(bool(signed)))
        self.register_load_state_dict_post_hook(lambda module, _keys: module._read_flags())

    def _host_value(self, name: str, key: Callable[[], object], read: Callable[[], T]) -> T:
        """``read()`` of a value held on the device, read again only when ``key()`` changes.

        The keys are the in-place version counters of the tensors read (plus whatever else the
        value depends on): calibration, loading a state and optimizer steps bump them. On a GPU
        every read into Python makes the host wait for all queued kernels, and the values
        below are needed on every forward.

        While ``torch.compile`` traces, the cached value is used as it is, a constant of the
        graph (dynamo cannot guard on a version counter, and a read would break the graph):
        calibration and loading refresh the flags (:meth:`_read_flags`), and ``max σ/α`` is
        not read there at all (:meth:`SRQQuantizer.sigma_ratio_max`).
        """
        cached = self.__dict__.get(name)
        if cached is not None and torch.compiler.is_compiling():
            return cached[1]
        version = key()
        if cached is None or cached[0] != version:
            cached = self._set_host_value(name, version, read())
        return cached[1]

    def _set_host_value(self, name: str, key: object, value: T) -> tuple[object, T]:
        """Store a value read elsewhere (several quantizers' at once) for :meth:`_host_value`."""
        self.__dict__[name] = (key, value)
        return key, value

    @property
    def grid(self) -> IntGrid:
        signed = self._host_value("_signed", lambda: self.signed_flag._version,
                                  lambda: bool(self.signed_flag))
        return IntGrid(self.bits, signed)

    def _read_flags(self) -> None:
        """Read signedness and the calibration flag into the host cache (after loading a
        state), so that a compiled forward finds them there."""
        _ = self.grid
        self._calibrated()

    @property
    def alpha(self) -> Tensor:
        return self.log_alpha.exp()

    def set_bits(self, bits: int) -> None:
        """Change the bit-width; the step is re-initialised by the next calibration."""
        self.bits = bits

    def initial_step(self, x: Tensor) -> Tensor:
        """The step calibration starts from: MSE-optimal on ``x`` (docs/method.md §1)."""
        per_channel = self.log_alpha.dim() > 0
        return mse_optimal_step(x, self.grid, self.channel_axis if per_channel else None)

    @torch.no_grad()
    def init_step(self, x: Tensor, signed: bool | None = None) -> Tensor:
        """Decide signedness, initialise ``α`` from ``x`` and return the step.

        ``x`` is the float weight, or samples of the float network's activations
        (calibrating with quantizers active zeroes 2-bit weights: docs/method.md §4).
        """
        if signed is None:
            signed = self.signed_mode if self.signed_mode is not None else bool((x < 0).any())
        self.signed_flag.fill_(signed)
        self._set_host_value("_signed", self.signed_flag._version, signed)
        step = self.initial_step(x)
        self.log_alpha.copy_(step.reshape(self.log_alpha.shape).log())
        self.initialized.fill_(True)
        self._set_host_value("_ready", self.initialized._version, True)
        return step

    @torch.no_grad()
    def project_(self) -> None:
        """Keep ``α`` finite after an optimizer step.

        ``α = exp(log α)`` is positive by construction, but a huge step on ``log α`` would
        underflow it to 0 or overflow it to inf; the bound ``[e^−30, e^30]`` is far outside
        any sensible step and keeps training recoverable.
        """
        self.log_alpha.clamp_(-LOG_ALPHA_BOUND, LOG_ALPHA_BOUND)

    def _calibrated(self) -> bool:
        return self._host_value("_ready", lambda: self.initialized._version,
                                lambda: bool(self.initialized))

    def check_ready(self) -> None:
        """Refuse to quantize before calibration."""
        if not self._calibrated():
            raise RuntimeError("quantizer used before calibration: call calibrate() first")

    def encoding(self) -> Encoding:
        """The frozen encoding (bits, signedness, step, channel axis) for export and reports."""
        axis = self.channel_axis if self.log_alpha.dim() > 0 else None
        return Encoding(self.bits, bool(self.signed_flag), self.alpha.detach(), axis)


class SRQQuantizer(Quantizer):
    """Fake-quantizes a tensor with SRQ; optionally applies DropBits while training.

    Args (beyond :class:`Quantizer`'s):
        pi_mode: how the backward treats ``π_m`` (see :mod:`srqcli.core.srq`).
        window: edge-window half-width; ``None`` picks it from ``σ/α``.
        sigma_init: initial ``σ/α`` (docs/method.md: α/4).
        sigma_max: the cap of ``σ/α`` (default α/2; lower caps are an ablation).
    """

    def __init__(self, bits: int, signed: bool | None, *, channels: int | None = None,
                 channel_axis: int = 0, dims: int = 1, pi_mode: str = "detach",
                 window: int | None = None, sigma_init: float = 0.25,
                 sigma_max: float = SIGMA_MAX_RATIO) -> None:
        super().__init__(bits, signed, channels=channels, channel_axis=channel_axis, dims=dims)
        self.pi_mode = pi_mode
        self.window = window
        self.sigma_init = sigma_init
        self.sigma_max = sigma_max
        self.log_sigma = nn.Parameter(torch.full(self.log_alpha.shape, math.log(sigma_init)))
        self.drop_variant: str | None = None
        self.drop_rate = 0.0
        self.generator: torch.Generator | None = None
        #: The next training forward's DropBits sample, drawn before the step by
        #: :meth:`draw_dropbits_`; ``None``: the forward draws it.
        self.drawn: db.DropBitsSample | None = None

    @property
    def sigma(self) -> Tensor:
        alpha = self.alpha
        return torch.minimum(torch.maximum(self.log_sigma.exp(), SIGMA_MIN_RATIO * alpha),
                             self.sigma_max * alpha)

    @torch.no_grad()
    def init_step(self, x: Tensor, signed: bool | None = None) -> Tensor:
        """Initialise ``α`` (MSE-optimal on ``x``) and ``σ = sigma_init·α``."""
        step = super().init_step(x, signed)
        self.log_sigma.copy_((step * self.sigma_init).reshape(self.log_sigma.shape).log())
        return step

    @torch.no_grad()
    def project_(self) -> None:
        """Also keep ``log σ`` inside ``[0.05·α, sigma_max·α]`` so it cannot drift where its
        gradient is zero."""
        super().project_()
        self.log_sigma.copy_(self.sigma.log())

    def _versions(self) -> tuple[int, int]:
        return self.log_alpha._version, self.log_sigma._version

    def sigma_ratio_max(self) -> float:
        """``max σ/α``, which sets the edge window (and DropBits' mask reach).

        Read again only after ``log α`` or ``log σ`` changed in place (:meth:`_host_value`).
        :func:`refresh_sigma_ratios_` refreshes all quantizers of a model with one read after
        each optimizer step; anything else that changes them (loading, a manual step) is caught
        by the version check.

        While ``torch.compile`` traces: the cap ``sigma_max``, the ratio's upper bound. The
        window a graph bakes in then covers every σ the run can reach (w = 5 at the default
        cap α/2, within the 1e-3 truncation tolerance of :func:`default_window`), and a σ that
        moves never recompiles the model.
        """
        if torch.compiler.is_compiling():
            return self.sigma_max
        return self._host_value("_sigma_ratio", self._versions,
                                lambda: float(self._sigma_ratio_on_device()))

    def _sigma_ratio_on_device(self) -> Tensor:
        return (self.sigma / self.alpha).detach().max().float()

    def edge_window(self, scale: float = 1.0) -> int:
        """The edge-window half-width: ``window`` if set, else picked from ``max σ/α`` for a
        grid of step ``scale·α`` (:func:`srqcli.core.srq.default_window`)."""
        if self.window is not None:
            return self.window
        return default_window(self.sigma_ratio_max() / scale)

    def configure_dropbits(self, variant: str | None, rate: float,
                           generator: torch.Generator | None) -> None:
        """Enable DropBits (weights only) with a variant from :data:`dropbits.VARIANTS`."""
        if variant is not None and variant not in db.VARIANTS:
            raise ValueError(f"unknown DropBits variant {variant!r}")
        self.drop_variant, self.drop_rate, self.generator = variant, rate, generator

    def dropbits_active(self) -> bool:
        """DropBits is on at a positive rate for a grid it can narrow (never below 2 bits)."""
        return bool(self.drop_variant) and self.drop_rate > 0 and self.bits > 2

    def sample_dropbits(self, x: Tensor, alpha: Tensor) -> db.DropBitsSample:
        """One DropBits draw for ``x`` (the float32 weight) from the run's generator."""
        grid, gen = self.grid, self.generator
        if self.drop_variant == "mask":
            reach = db.mask_reach(self.sigma_ratio_max())
            return db.sample_mask((x / alpha).detach(), grid, self.drop_rate, gen, reach)
        sampler = db.sample_top if self.drop_variant == "top" else db.sample_lsb
        return sampler(x.shape, grid, self.drop_rate, gen, x.device)

    @torch.no_grad()
    def draw_dropbits_(self, weight: Tensor) -> None:
        """Draw the next training forward's sample now, outside the forward.

        A compiled forward cannot draw from the run's ``torch.Generator`` (dynamo does not
        trace generators; a draw would break the graph); drawn here, the sample enters the
        graph as an input, and the drops are the ones the forward would have drawn from the
        same generator state. :class:`~srqcli.nn.dropbits_schedule.DropBitsSchedule` calls
        this before every step when it draws ahead.
        """
        self.drawn = self.sample_dropbits(weight.float(), self.alpha.float()) \
            if self.dropbits_active() else None

    def forward(self, x: Tensor) -> Tensor:
        self.check_ready()
        grid = self.grid
        # Quantize in float32 even under bf16/fp16 autocast: half precision cannot round
        # x/α exactly for 8-bit codes, and the result must equal what export computes.
        dtype = x.dtype
        x = x.float()
        alpha, sigma = self.alpha.float(), self.sigma.float()
        if self.training:
            sample = self.drawn
            if sample is None and self.dropbits_active():
                sample = self.sample_dropbits(x, alpha)
            if sample is not None:
                return self._forward_dropbits(x, alpha, sigma, grid, sample).to(dtype)
        return srq_quantize(x, alpha, sigma, grid.kmin, grid.kmax, window=self.edge_window(),
                            pi_mode=self.pi_mode).to(dtype)

    def _forward_dropbits(self, x: Tensor, alpha: Tensor, sigma: Tensor, grid: IntGrid,
                          sample: db.DropBitsSample) -> Tensor:
        if sample.survivors is not None:  # the mask variant
            return db.masked_grid_quantize(x, alpha, sigma, grid, sample.survivors, self.pi_mode)
        if sample.factor is None:
            return srq_quantize(x, alpha, sigma, sample.kmin, sample.kmax, window=self.edge_window(),
                                pi_mode=self.pi_mode)
        # LSB drop: SRQ on the grid with step 2^d·α (σ unchanged); α's gradient flows through
        # the product, so it picks up the factor 2^d by the chain rule. Where d = 0 the ratio
        # is σ/α, so the window is the undropped one.
        return srq_quantize(x, alpha * sample.factor, sigma, sample.kmin, sample.kmax,
                            window=self.edge_window(), pi_mode=self.pi_mode)

    def extra_repr(self) -> str:
        kind = "per-channel" if self.log_alpha.dim() else "per-tensor"
        return f"bits={self.bits}, signed={bool(self.signed_flag)}, {kind}, pi_mode={self.pi_mode}"


def refresh_sigma_ratios_(quantizers: list[SRQQuantizer]) -> None:
    """Refresh every quantizer's cached ``max σ/α`` with one host read (one GPU sync) in all."""
    if not quantizers:
        return
    ratios = torch.stack([q._sigma_ratio_on_device() for q in quantizers]).tolist()
    for q, ratio in zip(quantizers, ratios):
        q._set_host_value("_sigma_ratio", q._versions(), ratio)
