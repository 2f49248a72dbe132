"""Event-driven evaluation of :class:`snn_delays.conv_synapse.DelayConv2d` with rounded delays, as
compiled loops (CPU): every nonzero input count (t, b, i, y, x) adds c * w[o, i, u, v] to output
(t + d[o, i, u, v], b, o, (y + p - u) / s, (x + p - v) / s) where that is a whole, in-frame position
before T. Work is proportional to the events times C_out k^2, not to T H W C_in C_out k^2 Td.

PyTorch twins (the same sums in another order): :func:`snn_delays.conv_synapse.shifted_conv_sum` and
the 3-D convolution of the rounded kernel; the tests compare them.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .backends.kernels.runtime import njit, prange

__all__ = ["event_conv_eval"]


@njit(parallel=True, fastmath=False, cache=True, nogil=True)
def _event_conv(ev_t, ev_i, ev_y, ev_x, ev_c, starts, w, d, stride, padding, out):  # pragma: no cover - compiled
    # events of sample b are ev_*[starts[b]:starts[b + 1]]
    t_len, b_len, c_out, h_out, w_out = out.shape
    k = w.shape[2]
    for bo in prange(b_len * c_out):  # each (b, o) writes only out[:, b, o]: no races
        b = bo // c_out
        o = bo % c_out
        for e in range(starts[b], starts[b + 1]):
            t, i, yy, xx, c = ev_t[e], ev_i[e], ev_y[e], ev_x[e], ev_c[e]
            for u in range(k):
                ny = yy + padding - u
                if ny < 0 or ny % stride != 0:
                    continue
                oy = ny // stride
                if oy >= h_out:
                    continue
                for v in range(k):
                    nx = xx + padding - v
                    if nx < 0 or nx % stride != 0:
                        continue
                    ox = nx // stride
                    if ox >= w_out:
                        continue
                    ts = t + d[o, i, u, v]
                    if ts < t_len:
                        out[ts, b, o, oy, ox] += c * w[o, i, u, v]


def event_conv_eval(x: Tensor, weight: Tensor, delay_steps: Tensor, stride: int, padding: int) -> Tensor:
    """x (T, B, C_in, H, W) counts, weight (C_out, C_in, k, k), integer delays (C_out, C_in, k, k) ->
    (T, B, C_out, H_out, W_out); CPU float32/float64, no gradient (evaluation)."""
    t_len, b = x.shape[:2]
    c_out, _, k, _ = weight.shape
    h_out = (x.shape[3] + 2 * padding - k) // stride + 1
    w_out = (x.shape[4] + 2 * padding - k) // stride + 1
    xs = x.detach().contiguous()
    ws = weight.detach().to(xs.dtype).contiguous()
    ds = delay_steps.detach().to(torch.int64).contiguous()
    out = torch.zeros(t_len, b, c_out, h_out, w_out, dtype=xs.dtype)
    nz = torch.nonzero(xs.permute(1, 0, 2, 3, 4))  # (n_events, 5): b, t, i, y, x, grouped by sample
    counts = xs.permute(1, 0, 2, 3, 4)[tuple(nz.T)]
    starts = torch.searchsorted(nz[:, 0].contiguous(), torch.arange(b + 1))
    cols = [nz[:, j].contiguous().numpy() for j in (1, 2, 3, 4)]
    _event_conv(*cols, counts.numpy(), starts.numpy(), ws.numpy(), ds.numpy(), int(stride), int(padding), out.numpy())
    return out

