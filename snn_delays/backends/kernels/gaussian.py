"""Compiled Gaussian kernels with their analytic gradients: the tap values of the tap path and
the dense (S, Td) training kernel. PyTorch twins: :func:`snn_delays.backends.taps.tap_values` and
:func:`snn_delays.synapse.gaussian_kernel`."""

from __future__ import annotations

import numpy as np

from .runtime import njit, prange

__all__ = ["tap_values_forward", "tap_values_backward", "gaussian_kernel_forward", "gaussian_kernel_backward"]


@njit(fastmath=False, cache=True, nogil=True, inline="always")
def _tap_norm(de, sigma, td, rn, full, eps):  # pragma: no cover
    # (normaliser, its derivative w.r.t. d) over the window the PyTorch twin sums
    base = np.floor(de)
    lo, hi = (0.0, td - 1.0) if full else (max(0.0, base - rn + 1), min(td - 1.0, base + rn))
    norm = eps
    dnorm = 0.0
    n = lo
    while n <= hi:
        z = (n - de) / sigma
        g = np.exp(-0.5 * z * z)
        norm += g
        dnorm += g * z / sigma
        n += 1.0
    return norm, dnorm

@njit(parallel=True, fastmath=False, cache=True, nogil=True)
def _tap_values_forward(w, d, sigma, td, r, rn, full, eps, values, steps):  # pragma: no cover
    n_el, p_len = values.shape
    for e in prange(n_el):
        de = np.float64(d[e])
        norm, _ = _tap_norm(de, sigma, td, rn, full, eps)
        first = np.floor(de) - r + 1
        scale = np.float64(w[e]) / norm
        for p in range(p_len):
            pos = first + p
            steps[e, p] = np.int64(pos)
            if 0.0 <= pos <= td - 1.0:
                z = (pos - de) / sigma
                values[e, p] = scale * np.exp(-0.5 * z * z)
            else:
                values[e, p] = 0.0

@njit(parallel=True, fastmath=False, cache=True, nogil=True)
def _tap_values_backward(w, d, sigma, td, r, rn, full, eps, gv, gw, gd):  # pragma: no cover
    n_el, p_len = gv.shape
    for e in prange(n_el):
        de = np.float64(d[e])
        norm, dnorm = _tap_norm(de, sigma, td, rn, full, eps)
        first = np.floor(de) - r + 1
        a = 0.0  # sum_p gv_p g_p
        b = 0.0  # sum_p gv_p dg_p/dd
        for p in range(p_len):
            pos = first + p
            if 0.0 <= pos <= td - 1.0:
                z = (pos - de) / sigma
                g = np.exp(-0.5 * z * z)
                a += gv[e, p] * g
                b += gv[e, p] * g * z / sigma
        gw[e] = a / norm
        gd[e] = np.float64(w[e]) * (b / norm - a * dnorm / (norm * norm))

# -- the dense Gaussian kernel (training, dense and FFT backends) --------------------------------
@njit(parallel=True, fastmath=False, cache=True, nogil=True)
def _gaussian_kernel_forward(w, d, sigma, td, eps, out):  # pragma: no cover
    # out[s, n] = sum_e w[s, e] g(n) / (eps + sum_n g(n)), g(n) = exp(-z^2 / 2), z = (n - Td + 1 + d) / sigma
    # (each exponential computed once, kept in a local row for the normalised pass)
    n_syn, m = w.shape
    for s in prange(n_syn):
        row = out[s]
        g = np.empty(td, dtype=np.float64)
        for n in range(td):
            row[n] = 0.0
        for e in range(m):
            de = np.float64(d[s, e])
            norm = eps
            for n in range(td):
                z = (n - td + 1 + de) / sigma
                g[n] = np.exp(-0.5 * z * z)
                norm += g[n]
            scale = np.float64(w[s, e]) / norm
            for n in range(td):
                row[n] += scale * g[n]

@njit(parallel=True, fastmath=False, cache=True, nogil=True)
def _gaussian_kernel_backward(w, d, sigma, td, eps, gk, gw, gd):  # pragma: no cover
    n_syn, m = w.shape
    for s in prange(n_syn):
        grow = gk[s]
        for e in range(m):
            de = np.float64(d[s, e])
            norm = eps
            dnorm = 0.0
            a = 0.0  # sum_n gk[n] g(n)
            b = 0.0  # sum_n gk[n] dg(n)/dd
            for n in range(td):
                z = (n - td + 1 + de) / sigma
                g = np.exp(-0.5 * z * z)
                dg = -g * z / sigma
                norm += g
                dnorm += dg
                a += grow[n] * g
                b += grow[n] * dg
            gw[s, e] = a / norm
            gd[s, e] = np.float64(w[s, e]) * (b / norm - a * dnorm / (norm * norm))


def tap_values_forward(w, d, sigma, td, r, rn, full, eps, values, steps) -> None:
    """Gaussian tap values (E, P) and integer delays (E, P) of elements w, d (E,); see backends.taps."""
    _tap_values_forward(w, d, float(sigma), int(td), int(r), int(rn), bool(full), float(eps), values, steps)


def tap_values_backward(w, d, sigma, td, r, rn, full, eps, gv, gw, gd) -> None:
    """Gradients (E,) of the weights and delays from the value gradient gv (E, P)."""
    _tap_values_backward(w, d, float(sigma), int(td), int(r), int(rn), bool(full), float(eps), gv, gw, gd)


def gaussian_kernel_forward(w, d, sigma, td, eps, out) -> None:
    """The dense training kernel (S, Td) of elements w, d (S, m); see synapse.gaussian_kernel."""
    _gaussian_kernel_forward(w, d, float(sigma), int(td), float(eps), out)


def gaussian_kernel_backward(w, d, sigma, td, eps, gk, gw, gd) -> None:
    """Gradients (S, m) of weights and delays from the kernel gradient gk (S, Td)."""
    _gaussian_kernel_backward(w, d, float(sigma), int(td), float(eps), gk, gw, gd)
