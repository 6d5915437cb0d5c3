"""Multichannel Wiener filtering with EM iterations, in torch (CPU or GPU).

Same algorithm as norbert's ``wiener`` / ``expectation_maximization`` and Open-Unmix's
``filtering.wiener`` (local Gaussian model, simplified EM of Nugraha, Liutkus and Vincent),
written for sepcluster on native complex tensors:

1. Initial source estimates ``y_j`` from the target magnitudes ``v_j``: the mixture phase
   (``softmask=False``: ``y_j = v_j * exp(i * angle(x))``) or ratio masks
   (``softmask=True``: ``y_j = x * v_j / (eps + sum_k v_k)``).
2. ``residual=True`` appends one more source: the mixture minus the sum of the estimates.
3. ``niter`` EM iterations (none when ``niter == 0``). The mixture and the estimates are
   first divided by ``max(1, max|x| / scale_factor)`` (per batch item) for numerical
   stability, as norbert and Open-Unmix do, and multiplied back at the end. Each iteration:
   power spectral densities ``v_j = mean_channels |y_j|^2``; spatial covariance matrices
   ``R_j(f) = sum_t y_j y_j^H / (eps + sum_t v_j)``; mixture covariance
   ``C_x = sqrt(eps) I + sum_j v_j R_j``; posterior means ``y_j = v_j R_j C_x^{-1} x``.
   ``C_x^{-1}`` is analytic for one and two channels (``1 / (C + eps)`` for one channel, as
   norbert; the adjugate over the determinant for two, with the regulariser kept apart) and a
   pseudo-inverse with relative cutoff ``eps`` otherwise.

Shapes (batch first, as the rest of sepcluster): the mixture STFT is complex
``(batch, channels, bins, frames)``, the target magnitudes real
``(batch, sources, channels or 1, bins, frames)`` and the result complex
``(batch, sources [+1 residual], channels, bins, frames)``.

Precision: complex64 / float32 by default; for two channels ``C_x^{-1} x`` keeps the regulariser
apart from the rounding of ``C_x`` (:func:`_solve_stereo`: identical channels make ``C_x``
singular up to the regularisation, and a plain float32 inverse then gains up to several times the
mixture's level); ``double=True`` computes everything in complex128 (the output is then complex128). ``eps`` defaults to 1e-10 (Open-Unmix); ``eps=None`` takes the machine
epsilon of the working real dtype, which is norbert's default.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from sepcluster.errors import AudioError

__all__ = ["wiener", "expectation_maximization", "softmask_estimates", "phase_estimates"]


def _resolve_eps(eps: Optional[float], real_dtype: torch.dtype) -> float:
    return float(torch.finfo(real_dtype).eps) if eps is None else float(eps)


def softmask_estimates(targets_mag: Tensor, mix_stft: Tensor, eps: float = 1e-10) -> Tensor:
    """Ratio-mask estimates ``x * v_j / (eps + sum_k v_k)``.

    targets_mag: real ``(batch, sources, channels or 1, bins, frames)``; mix_stft: complex
    ``(batch, channels, bins, frames)``. Returns complex ``(batch, sources, channels, bins, frames)``.
    """
    total = targets_mag.sum(dim=1, keepdim=True)
    mask = targets_mag / (eps + total)
    return mix_stft.unsqueeze(1) * mask.to(mix_stft.real.dtype)


def phase_estimates(targets_mag: Tensor, mix_stft: Tensor) -> Tensor:
    """Magnitudes with the mixture phase: ``v_j * exp(i * angle(x))`` (angle 0 where x == 0).

    Same shapes as :func:`softmask_estimates`.
    """
    mag = mix_stft.abs()
    phase = torch.where(mag > 0, mix_stft / torch.where(mag > 0, mag, 1.0), torch.ones_like(mix_stft))
    return targets_mag.to(mix_stft.real.dtype) * phase.unsqueeze(1)


def _invert(cxx: Tensor, eps: float) -> Tensor:
    """Inverse of the ``(channels, channels)`` matrices held in dims 1 and 2 of
    ``(batch, channels, channels, bins, frames)``: one channel, or more than two (two channels:
    :func:`_solve_stereo`)."""
    nb_channels = cxx.shape[1]
    if nb_channels == 1:
        return 1.0 / (cxx + eps)
    moved = cxx.permute(0, 3, 4, 1, 2)
    inv = torch.linalg.pinv(moved, rtol=eps, hermitian=False)
    return inv.permute(0, 3, 4, 1, 2)


def _solve_stereo(v: Tensor, R: Tensor, x: Tensor, reg: float) -> Tensor:
    """``z = C_x^{-1} x`` for two channels, ``C_x = reg I + sum_j v_j R_j``, without losing ``reg``.

    In float32 ``reg`` (1e-5 by default) is below the rounding of ``C_x``'s entries, so with
    identical channels the determinant and ``adj(C_x) x`` would cancel to noise. Here the
    regulariser is kept apart: ``det = det(G) + reg (G_00 + G_11) + reg^2`` (``G = sum_j v_j R_j``,
    a Hermitian PSD matrix, so ``det(G) >= 0``; computed in float64) and ``adj(C_x) x = adj(G) x
    + reg x``. v: real ``(batch, sources, bins, frames)``; R: ``(batch, sources, 2, 2, bins)``;
    x: ``(batch, 2, bins, frames)``. Returns ``(batch, 2, bins, frames)``.
    """
    g00 = torch.einsum("bsft,bsf->bft", v, R[:, :, 0, 0].real)
    g11 = torch.einsum("bsft,bsf->bft", v, R[:, :, 1, 1].real)
    g01 = torch.einsum("bsft,bsf->bft", v.to(R.dtype), R[:, :, 0, 1])
    wide = torch.float64
    gram = g00.to(wide) * g11.to(wide) - g01.real.to(wide) ** 2 - g01.imag.to(wide) ** 2
    det = gram.clamp_min(0.0) + reg * (g00.to(wide) + g11.to(wide)) + reg * reg
    inv_det = (1.0 / det).to(v.dtype)
    x0, x1 = x[:, 0], x[:, 1]
    z0 = (g11 * x0 - g01 * x1 + reg * x0) * inv_det
    z1 = (g00 * x1 - g01.conj() * x0 + reg * x1) * inv_det
    return torch.stack((z0, z1), dim=1)


def expectation_maximization(y: Tensor, mix_stft: Tensor, niter: int = 1, eps: float = 1e-10) -> Tensor:
    """Refine source estimates with ``niter`` EM iterations (no scaling is applied here).

    y: complex ``(batch, sources, channels, bins, frames)`` initial estimates;
    mix_stft: complex ``(batch, channels, bins, frames)``. Returns the refined estimates,
    same shape and dtype as ``y``.
    """
    nb_channels = mix_stft.shape[1]
    real_dtype = mix_stft.real.dtype
    eye = torch.eye(nb_channels, dtype=mix_stft.dtype, device=mix_stft.device)
    regularization = (eps ** 0.5) * eye[None, :, :, None, None]
    for _ in range(int(niter)):
        # power spectral densities (batch, sources, bins, frames)
        v = (y.real ** 2 + y.imag ** 2).mean(dim=2)
        # spatial covariance matrices (batch, sources, channels, channels, bins)
        weight = eps + v.sum(dim=-1)  # (batch, sources, bins)
        R = torch.einsum("bscft,bsdft->bscdf", y, y.conj())
        R = R / weight[:, :, None, None, :].to(real_dtype)
        vc = v.to(mix_stft.dtype)
        if nb_channels == 2:
            z = _solve_stereo(v, R, mix_stft, eps ** 0.5)
        else:
            # mixture covariance (batch, channels, channels, bins, frames), z = C_x^{-1} x
            cxx = torch.einsum("bsft,bscdf->bcdft", vc, R) + regularization
            inv = _invert(cxx, eps)
            del cxx
            z = (inv * mix_stft.unsqueeze(1)).sum(dim=2)
            del inv
        # y_j = v_j R_j z: (batch, sources, channels, bins, frames)
        y = torch.einsum("bscdf,bdft->bscft", R, z) * vc.unsqueeze(2)
    return y


def wiener(targets_mag: Tensor, mix_stft: Tensor, niter: int = 1, softmask: bool = False,
           residual: bool = False, eps: Optional[float] = 1e-10, scale_factor: float = 10.0,
           double: bool = False) -> Tensor:
    """Multichannel Wiener filter with EM (see the module docstring).

    Args:
        targets_mag: real ``(batch, sources, channels or 1, bins, frames)`` magnitude
            estimates (non-negative).
        mix_stft: complex ``(batch, channels, bins, frames)`` mixture STFT.
        niter: EM iterations (0: only the initial estimates).
        softmask: initial estimates from ratio masks instead of the mixture phase.
        residual: append a source equal to the mixture minus the sum of the estimates.
        eps: regularisation (None: machine epsilon of the working precision, as norbert).
        scale_factor: the mixture is scaled down by ``max(1, max|x| / scale_factor)`` for EM.
        double: compute in complex128.

    Returns:
        complex ``(batch, sources [+1], channels, bins, frames)`` source STFTs.
    """
    if not torch.is_complex(mix_stft) or mix_stft.dim() != 4:
        raise AudioError(f"wiener: mix_stft must be complex (batch, channels, bins, frames), got "
                         f"{tuple(mix_stft.shape)} {mix_stft.dtype}")
    if targets_mag.dim() != 5 or torch.is_complex(targets_mag):
        raise AudioError(f"wiener: targets_mag must be real (batch, sources, channels, bins, frames), got "
                         f"{tuple(targets_mag.shape)} {targets_mag.dtype}")
    b, c, f, t = mix_stft.shape
    if (targets_mag.shape[0] != b or targets_mag.shape[2] not in (1, c)
            or tuple(targets_mag.shape[3:]) != (f, t)):
        raise AudioError(f"wiener: targets_mag {tuple(targets_mag.shape)} does not match the mixture "
                         f"{tuple(mix_stft.shape)}")
    if int(niter) < 0:
        raise AudioError(f"wiener: niter must be >= 0, got {niter}")
    cdtype = torch.complex128 if (double or mix_stft.dtype == torch.complex128) else torch.complex64
    rdtype = torch.float64 if cdtype == torch.complex128 else torch.float32
    x = mix_stft.to(cdtype)
    mag = targets_mag.to(rdtype)
    eps = _resolve_eps(eps, rdtype)

    y = softmask_estimates(mag, x, eps) if softmask else phase_estimates(mag, x)
    if residual:
        y = torch.cat([y, (x - y.sum(dim=1)).unsqueeze(1)], dim=1)
    if int(niter) == 0:
        return y

    peak = x.abs().flatten(1).amax(dim=1)  # (batch,)
    max_abs = torch.clamp(peak / scale_factor, min=1.0).to(rdtype)
    scale = max_abs.view(b, 1, 1, 1)
    x = x / scale
    y = y / scale.unsqueeze(1)
    y = expectation_maximization(y, x, int(niter), eps=eps)
    return y * scale.unsqueeze(1)
