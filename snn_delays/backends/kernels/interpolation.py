"""Compiled tap values of the three interpolation kernels (Gaussian, triangle, bilinear) with a
width per element, and their analytic gradients (weight, delay, width). PyTorch twin:
:func:`snn_delays.backends.interpolation.interp_tap_values_reference`.

Element e (weight w, real delay d, width s) puts on integer delay j the value

    v(j) = w g(j - d) / N,   N = eps + sum_{j' in [0, Td - 1]} g(j' - d)      (gauss, triangle)
    v(j) = w g(j - d),       g(x) = max(0, 1 - |x|)                             (bilinear)

with g(x) = exp(-x^2 / (2 s^2)) (gauss) or max(0, s - |x|) (triangle). The P taps kept are at
delays floor(d) - R + 1 ... floor(d) + R (P = 2R), those outside [0, Td - 1] hold 0. The triangle's
and bilinear's support lies inside that window (R >= ceil(s), resp. 1), so its normaliser is the sum
over the window; the Gaussian's is summed over +-rn around floor(d) (rn >= 9 s + 1, the same
window the Gaussian tap path of :mod:`.gaussian` uses: equal to the full sum to float precision).
"""

from __future__ import annotations

import numpy as np

from .runtime import njit, prange

__all__ = ["MODES", "interp_values_forward", "interp_values_backward"]

MODES = {"gauss": 0, "triangle": 1, "bilinear": 2}


@njit(fastmath=False, cache=True, nogil=True, inline="always")
def _shape(mode, x, s):  # pragma: no cover
    # (g, dg/dd, dg/ds) at x = j - d (dg/dd = -dg/dx)
    if mode == 0:
        g = np.exp(-0.5 * (x / s) * (x / s))
        return g, g * x / (s * s), g * x * x / (s * s * s)
    ax = abs(x)
    sgn = 1.0 if x > 0 else (-1.0 if x < 0 else 0.0)
    if mode == 1:
        if ax < s:
            return s - ax, sgn, 1.0
        return 0.0, 0.0, 0.0
    if ax < 1.0:
        return 1.0 - ax, sgn, 0.0
    return 0.0, 0.0, 0.0


@njit(fastmath=False, cache=True, nogil=True, inline="always")
def _norm(mode, de, se, td, r, eps):  # pragma: no cover
    # (N, dN/dd, dN/ds) of one element
    if mode == 2:
        return 1.0, 0.0, 0.0
    base = np.floor(de)
    rn = r
    if mode == 0:
        rn = max(r, int(np.ceil(9.0 * se)) + 1)
    lo = max(0.0, base - rn + 1)
    hi = min(td - 1.0, base + rn)
    norm = eps
    dnd = 0.0
    dns = 0.0
    n = lo
    while n <= hi:
        g, gd, gs = _shape(mode, n - de, se)
        norm += g
        dnd += gd
        dns += gs
        n += 1.0
    return norm, dnd, dns


@njit(parallel=True, fastmath=False, cache=True, nogil=True)
def _forward(mode, w, d, s, td, r, eps, values, steps):  # pragma: no cover
    n_el, p_len = values.shape
    for e in prange(n_el):
        de = np.float64(d[e])
        se = np.float64(s[e])
        norm, _, _ = _norm(mode, de, se, td, r, eps)
        first = np.floor(de) - r + 1
        scale = np.float64(w[e]) / norm
        for p in range(p_len):
            pos = first + p
            steps[e, p] = np.int64(pos)
            if 0.0 <= pos <= td - 1.0:
                g, _, _ = _shape(mode, pos - de, se)
                values[e, p] = scale * g
            else:
                values[e, p] = 0.0


@njit(parallel=True, fastmath=False, cache=True, nogil=True)
def _backward(mode, w, d, s, td, r, eps, gv, gw, gd, gs):  # pragma: no cover
    n_el, p_len = gv.shape
    for e in prange(n_el):
        de = np.float64(d[e])
        se = np.float64(s[e])
        norm, dnd, dns = _norm(mode, de, se, td, r, eps)
        first = np.floor(de) - r + 1
        a = 0.0  # sum_p gv_p g_p
        bd = 0.0  # sum_p gv_p dg_p/dd
        bs = 0.0  # sum_p gv_p dg_p/ds
        for p in range(p_len):
            pos = first + p
            if 0.0 <= pos <= td - 1.0:
                g, g_d, g_s = _shape(mode, pos - de, se)
                a += gv[e, p] * g
                bd += gv[e, p] * g_d
                bs += gv[e, p] * g_s
        we = np.float64(w[e])
        gw[e] = a / norm
        gd[e] = we * (bd / norm - a * dnd / (norm * norm))
        gs[e] = we * (bs / norm - a * dns / (norm * norm))


def interp_values_forward(mode, w, d, s, td, r, eps, values, steps) -> None:
    """Tap values (E, P) and integer delays (E, P) of elements w, d, s (E,); P = 2 r."""
    _forward(int(mode), w, d, s, int(td), int(r), float(eps), values, steps)


def interp_values_backward(mode, w, d, s, td, r, eps, gv, gw, gd, gs) -> None:
    """Gradients (E,) of weights, delays and widths from the value gradient gv (E, P)."""
    _backward(int(mode), w, d, s, int(td), int(r), float(eps), gv, gw, gd, gs)
