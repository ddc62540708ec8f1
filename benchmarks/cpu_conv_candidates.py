"""Issue 22's candidates for the CPU's convolution, one 3x3 forward side by side on one thread.

    python -m benchmarks.cpu_conv_candidates [--batch 100] [--channels 16] [--size 14]

Each candidate computes the same correlation (padding 1, stride 1, with bias), is checked
against float64, and is timed as the median of 40 calls after one warm-up:
- ``ours``: `backend.conv.correlate` on NumPy (patch matrices + OpenBLAS), the library's path;
- ``sgemm``, ``sgemm-wide``: its product alone, as (pixels x 9C) @ (9C x O) and the other way
  round (O x 9C) @ (9C x pixels);
- ``winograd``: F(2x2, 3x3) in NumPy, transforms as array passes and 16 batched products;
- ``numba``: a direct convolution compiled by Numba (``parallel=True``, one accumulator per
  image), where Numba is installed;
- ``torch``: PyTorch's `conv2d` (oneDNN), where PyTorch is installed.
Run it on a quiet machine; the results of 2026-12-04 are in BENCHMARKS.md.
"""
import argparse
import statistics
import time

import numpy
import threadpoolctl

from xpnn.backend.conv import PaddedInput, correlate

WINOGRAD_G = numpy.array([[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]])


def winograd(x, kernel, bias):
    """F(2x2, 3x3) correlation of (N, H, W, C) `x`, H and W even, padding 1: (N, H, W, O)."""
    n, h, w, c = x.shape
    o = kernel.shape[0]
    u = numpy.einsum("ia,ocab,jb->ijco", WINOGRAD_G, kernel, WINOGRAD_G).astype(x.dtype)
    padded = numpy.zeros((n, h + 2, w + 2, c), x.dtype)
    padded[:, 1:h + 1, 1:w + 1] = x
    th, tw = h // 2, w // 2
    s = padded.strides
    d = numpy.lib.stride_tricks.as_strided(padded, (n, th, tw, 4, 4, c),
                                           (s[0], 2 * s[1], 2 * s[2], s[1], s[2], s[3]))
    rows = (d[:, :, :, 0] - d[:, :, :, 2], d[:, :, :, 1] + d[:, :, :, 2],
            d[:, :, :, 2] - d[:, :, :, 1], d[:, :, :, 1] - d[:, :, :, 3])
    v = numpy.empty((4, 4, n, th, tw, c), x.dtype)
    for i, r in enumerate(rows):
        numpy.subtract(r[..., 0, :], r[..., 2, :], out=v[i, 0])
        numpy.add(r[..., 1, :], r[..., 2, :], out=v[i, 1])
        numpy.subtract(r[..., 2, :], r[..., 1, :], out=v[i, 2])
        numpy.subtract(r[..., 1, :], r[..., 3, :], out=v[i, 3])
    m = numpy.matmul(v.reshape(16, -1, c), u.reshape(16, c, o)).reshape(4, 4, n, th, tw, o)
    out = numpy.empty((n, th, 2, tw, 2, o), x.dtype)
    for i, q in enumerate((m[0] + m[1] + m[2], m[1] - m[2] - m[3])):
        out[:, :, i, :, 0] = q[0] + q[1] + q[2]
        out[:, :, i, :, 1] = q[1] - q[2] - q[3]
    return out.reshape(n, h, w, o) + bias


def numba_correlate():
    """A Numba direct correlation (padded (N, H+2, W+2, C), (3, 3, C, O), (O,), out), or None."""
    try:
        import numba
    except ImportError:
        return None

    @numba.njit(parallel=True)
    def run(padded, kernel, bias, out):
        n, ho, wo, o = out.shape
        c = padded.shape[3]
        for image in numba.prange(n):
            acc = numpy.empty(o, numpy.float32)
            for i in range(ho):
                for j in range(wo):
                    acc[:] = bias
                    for a in range(3):
                        for b in range(3):
                            for ch in range(c):
                                value = padded[image, i + a, j + b, ch]
                                for k in range(o):
                                    acc[k] += value * kernel[a, b, ch, k]
                    out[image, i, j] = acc
    return run


def median_ms(call, repeats=40):
    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--size", type=int, default=14)
    args = parser.parse_args()
    n, c, h = args.batch, args.channels, args.size
    rng = numpy.random.default_rng(0)
    x = rng.standard_normal((n, h, h, c)).astype(numpy.float32)
    kernel = rng.standard_normal((c, c, 3, 3)).astype(numpy.float32)
    bias = rng.standard_normal(c).astype(numpy.float32)
    padded = numpy.zeros((n, h + 2, h + 2, c), numpy.float32)
    padded[:, 1:h + 1, 1:h + 1] = x
    hwco = numpy.ascontiguousarray(kernel.transpose(2, 3, 1, 0))
    windows = numpy.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(1, 2))
    exact = numpy.einsum("nhwcab,abco->nhwo", windows.astype(numpy.float64), hwco) + bias
    patches = numpy.ascontiguousarray(windows.transpose(0, 1, 2, 4, 5, 3)).reshape(-1, 9 * c)
    weights = hwco.reshape(9 * c, c)
    patches_t, weights_t = numpy.ascontiguousarray(patches.T), numpy.ascontiguousarray(weights.T)

    candidates = {
        "ours": lambda: correlate(PaddedInput(x, 1, (h + 2, h + 2)), kernel, 1, bias),
        "sgemm": lambda: patches @ weights,
        "sgemm-wide": lambda: weights_t @ patches_t,
        "winograd": lambda: winograd(x, kernel, bias),
    }
    run = numba_correlate()
    if run is not None:
        out = numpy.empty((n, h, h, c), numpy.float32)
        candidates["numba"] = lambda: (run(padded, hwco, bias, out), out)[1]
    try:
        import torch
        torch.set_num_threads(1)
        xt = torch.from_numpy(numpy.ascontiguousarray(x.transpose(0, 3, 1, 2)))
        kt, bt = torch.from_numpy(kernel), torch.from_numpy(bias)
        candidates["torch"] = lambda: torch.nn.functional.conv2d(
            xt, kt, bt, padding=1).numpy().transpose(0, 2, 3, 1)
    except ImportError:
        pass
    flop = 2 * n * h * h * c * 9 * c
    print(f"3x3 correlation {c} -> {c} channels, {h} x {h}, batch {n}: {flop / 1e6:.1f} MFLOP, "
          f"one thread")
    print(f"{'candidate':<12} {'ms':>8} {'GFLOP/s':>8} {'max error':>10}")
    with threadpoolctl.threadpool_limits(1):
        for name, call in candidates.items():
            try:
                import numba
                numba.set_num_threads(1)
            except ImportError:
                pass
            ms = median_ms(call)
            result = call()
            error = "" if name.startswith("sgemm") else \
                f"{numpy.abs(result.reshape(exact.shape) - exact).max():.1e}"
            print(f"{name:<12} {ms:8.3f} {flop / ms / 1e6:8.1f} {error:>10}")


if __name__ == "__main__":
    main()
