"""Probe: do TF32 tensor cores pay for our convolutions? (conv_tf32.cu beside this file)

    python -m benchmarks.conv_tensor_cores            # on a GPU: time and check every shape
    python -m benchmarks.conv_tensor_cores --dry-run  # on the CPU: the layout maths, in NumPy

For each convolution shape of our networks, at batch 100 and 1000, it times the forward
correlation and the kernel gradient three ways: the ``fused`` implementation (im2col + a float32
product), whatever ``backend.conv`` computes by default on the GPU, and the TF32 implicit GEMMs
of conv_tf32.cu (padding pass + tensor-core GEMM + epilogue, all included), with TF32 inputs
and with 3xTF32 (operands split in two TF32 parts: about float32 accuracy on tensor cores). Each result is
checked against a float64 reference by relative norm error. CUDA events, median of `--repeat`
after a warm-up. A probe in the llm.c habit: only a measured winner moves into backend/.
"""
import argparse
import statistics
import sys
from pathlib import Path

import numpy

SOURCE = Path(__file__).with_name("conv_tf32.cu")
# (name, H = W, C, O, k): every convolution of lenet, resnet and resnet_deep ("same" padding)
SHAPES = [("conv1 5x5 1->6 28", 28, 1, 6, 5), ("conv2 5x5 6->16 14", 14, 6, 16, 5),
          ("res 3x3 16->16 14", 14, 16, 16, 3), ("res 3x3 16->16 7", 7, 16, 16, 3)]
THREADS = 128
CHUNK_ROWS = 2048  # pixels per warp in the kernel gradient


def round_up(value, multiple):
    return -(-value // multiple) * multiple


class FlatPadded:
    """The flat-padded layout of one convolution shape (see conv_tf32.cu)."""

    def __init__(self, n, h, c, o, k, c_multiple=8):
        self.n, self.h, self.c, self.o, self.k = n, h, c, o, k
        self.pad = (k - 1) // 2
        self.hp = self.wp = h + 2 * self.pad
        self.cp, self.op = round_up(c, c_multiple), round_up(o, 16)
        self.p = round_up(n * self.hp * self.wp, 16)
        self.rows = self.p + (k - 1) * (self.wp + 1) + 16  # taps read past the last pixel

    def weights(self, kernel, xp):
        """(k * k, CP, OP) taps of an (O, C, k, k) kernel, zero-padded, in its dtype."""
        taps = xp.zeros((self.k * self.k, self.cp, self.op), dtype=kernel.dtype)
        taps[:, :self.c, :self.o] = kernel.transpose(2, 3, 1, 0).reshape(-1, self.c, self.o)
        return taps


def reference(x, kernel, bias, grad):
    """float64 (out (N, H, W, O), d kernel (O, C, k, k)) of a 'same' correlation, in NumPy or
    CuPy (whichever `x` is)."""
    xp = sys.modules[type(x).__module__.split(".")[0]]
    n, h, w, c = x.shape
    o, _, k, _ = kernel.shape
    pad = (k - 1) // 2
    padded = xp.zeros((n, h + 2 * pad, w + 2 * pad, c))
    padded[:, pad:pad + h, pad:pad + w] = x
    kernel = kernel.astype(xp.float64)
    out = xp.zeros((n, h, w, o)) + bias
    d_kernel = xp.zeros(kernel.shape)
    for a in range(k):
        for b in range(k):
            window = padded[:, a:a + h, b:b + w]
            out += window @ kernel[:, :, a, b].T
            d_kernel[:, :, a, b] = xp.tensordot(grad, window, ([0, 1, 2], [0, 1, 2]))
    return out, d_kernel


def flat_padded_numpy(x, kernel, bias, grad):
    """The kernels' index scheme in float64 NumPy: what conv_tf32.cu computes, without the
    tensor cores (checks the layout maths on the CPU)."""
    n, h, w, c = x.shape
    o, _, k, _ = kernel.shape
    lay = FlatPadded(n, h, c, o, k, c_multiple=16)
    xp_flat = numpy.zeros((lay.rows, lay.cp))
    grid = xp_flat[:n * lay.hp * lay.wp].reshape(n, lay.hp, lay.wp, lay.cp)
    grid[:, lay.pad:lay.pad + h, lay.pad:lay.pad + w, :c] = x
    taps = lay.weights(kernel, numpy)
    out_grid = numpy.zeros((lay.p, lay.op))
    for tap in range(k * k):
        offset = (tap // k) * lay.wp + tap % k
        out_grid += xp_flat[offset:offset + lay.p] @ taps[tap]
    out = out_grid[:n * lay.hp * lay.wp].reshape(n, lay.hp, lay.wp, lay.op)[:, :h, :w, :o] + bias
    g_flat = numpy.zeros((lay.p, lay.op))
    g_flat[:n * lay.hp * lay.wp].reshape(n, lay.hp, lay.wp, lay.op)[:, :h, :w, :o] = grad
    d_taps = numpy.stack([xp_flat[off:off + lay.p].T @ g_flat for off in
                          ((tap // k) * lay.wp + tap % k for tap in range(k * k))])
    d_kernel = d_taps[:, :c, :o].reshape(k, k, c, o).transpose(3, 2, 0, 1)
    return out, d_kernel


def relative_error(value, ref):
    value, ref = (numpy.asarray(getattr(v, "get", lambda: v)(), dtype=numpy.float64)
                  for v in (value, ref))
    return float(numpy.linalg.norm(value - ref) / numpy.linalg.norm(ref))


class Tf32Conv:
    """conv_tf32.cu's kernels for one shape, with their buffers made once (as a graph would);
    `variant` "tf32" (one product) or "3xtf32" (split operands, about float32 accuracy)."""

    def __init__(self, cupy, module, n, h, c, o, k, variant="tf32"):
        self.cupy, self.module, self.variant = cupy, module, variant
        self.lay = FlatPadded(n, h, c, o, k, c_multiple=16)
        lay = self.lay
        self.xp_flat = cupy.zeros((lay.rows, lay.cp), dtype=cupy.float32)
        self.g_flat = cupy.zeros((lay.rows, lay.op), dtype=cupy.float32)
        self.out_grid = cupy.empty((lay.p, lay.op), dtype=cupy.float32)
        self.chunks = -(-lay.p // CHUNK_ROWS)
        self.partial = cupy.empty((self.chunks, k * k, lay.cp, lay.op), dtype=cupy.float32)
        self.d_taps = cupy.empty((k * k, lay.cp, lay.op), dtype=cupy.float32)

    def _launch(self, name, work_items, args):
        blocks = min(-(-work_items // THREADS), 65535 * 16)
        self.module.get_function(name)((blocks,), (THREADS,), args)

    def _place(self, source, target, channels, padded_channels, pad):
        lay, i32 = self.lay, numpy.int32
        self._launch("pad_input", source.size, (
            source, target, numpy.int64(source.size), i32(lay.h), i32(lay.h), i32(channels),
            i32(lay.hp), i32(lay.wp), i32(padded_channels), i32(pad)))

    def forward(self, x, taps, bias, out):
        lay, i32 = self.lay, numpy.int32
        self._place(x, self.xp_flat, lay.c, lay.cp, lay.pad)
        warps = (lay.p // 16) * (lay.op // 16)
        self._launch(f"conv_forward_{self.variant}", warps * 32, (
            self.xp_flat, taps, self.out_grid, i32(lay.p), i32(lay.cp), i32(lay.op), i32(lay.k),
            i32(lay.wp)))
        self._launch("take_output", out.size, (
            self.out_grid, bias, out, numpy.int64(out.size), i32(lay.h), i32(lay.h), i32(lay.o),
            i32(lay.hp), i32(lay.wp), i32(lay.op)))
        return out

    def kernel_gradient(self, x, grad):
        """(O, C, k, k) d kernel; `x` already placed by `forward`."""
        lay, i32 = self.lay, numpy.int32
        self._place(grad, self.g_flat, lay.o, lay.op, 0)
        warps = self.chunks * lay.k * lay.k * (lay.cp // 16) * (lay.op // 16)
        self._launch(f"conv_kernel_grad_{self.variant}", warps * 32, (
            self.xp_flat, self.g_flat, self.partial, i32(lay.p), i32(lay.cp), i32(lay.op),
            i32(lay.k), i32(lay.wp), i32(CHUNK_ROWS)))
        size = self.d_taps.size
        self._launch("sum_chunks", size, (self.partial, self.d_taps, i32(self.chunks),
                                          numpy.int64(size)))
        k, c, o = lay.k, lay.c, lay.o
        return self.d_taps[:, :c, :o].reshape(k, k, c, o).transpose(3, 2, 0, 1)


def time_ms(cupy, function, repeat):
    for _ in range(3):
        function()
    times = []
    for _ in range(repeat):
        start, stop = cupy.cuda.Event(), cupy.cuda.Event()
        start.record()
        function()
        stop.record()
        stop.synchronize()
        times.append(cupy.cuda.get_elapsed_time(start, stop))
    return statistics.median(times)


def dry_run():
    rng = numpy.random.default_rng(0)
    for name, h, c, o, k in SHAPES:
        x, grad = rng.standard_normal((3, h, h, c)), rng.standard_normal((3, h, h, o))
        kernel, bias = rng.standard_normal((o, c, k, k)), rng.standard_normal(o)
        out_ref, dk_ref = reference(x, kernel, bias, grad)
        out, dk = flat_padded_numpy(x, kernel, bias, grad)
        print(f"{name}: layout maths, forward error {relative_error(out, out_ref):.1e}, "
              f"kernel gradient error {relative_error(dk, dk_ref):.1e}")
        assert relative_error(out, out_ref) < 1e-12 and relative_error(dk, dk_ref) < 1e-12


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--batch-sizes", default="100,1000")
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args(argv)
    if args.dry_run:
        dry_run()
        return 0
    import cupy

    from xpnn.backend import using
    from xpnn.backend.conv import PaddedInput, correlate, kernel_gradient

    module = cupy.RawModule(code=SOURCE.read_text(), options=("--std=c++17",))
    rng = numpy.random.default_rng(0)
    variants = ("tf32", "3xtf32")
    rows = ["| shape | batch | op | fused (im2col) us | gpu default us | tf32 us (error) | "
            "3xtf32 us (error) |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for batch in [int(b) for b in args.batch_sizes.split(",")]:
        for name, h, c, o, k in SHAPES:
            x = cupy.asarray(rng.random((batch, h, h, c), dtype=numpy.float32))
            grad = cupy.asarray(rng.standard_normal((batch, h, h, o)).astype(numpy.float32))
            kernel = cupy.asarray(rng.standard_normal((o, c, k, k)).astype(numpy.float32))
            bias = cupy.asarray(rng.standard_normal(o).astype(numpy.float32))
            out_ref, dk_ref = reference(x, kernel, bias, grad)
            pad = (k - 1) // 2
            frame = PaddedInput(x, pad, (h + 2 * pad, h + 2 * pad))
            times = {}
            for way in ("fused", None):
                with using(way):
                    times[way, "forward"] = time_ms(
                        cupy, lambda: correlate(frame, kernel, 1, bias), args.repeat)
                    times[way, "kernel gradient"] = time_ms(
                        cupy, lambda: kernel_gradient(frame, grad, k, 1), args.repeat)
            errors = {}
            for variant in variants:
                conv = Tf32Conv(cupy, module, batch, h, c, o, k, variant)
                taps = conv.lay.weights(kernel, cupy)
                out = cupy.full((batch, h, h, o), cupy.nan, dtype=cupy.float32)
                conv.forward(x, taps, bias, out)
                errors[variant, "forward"] = relative_error(out, out_ref)
                errors[variant, "kernel gradient"] = relative_error(conv.kernel_gradient(x, grad),
                                                                    dk_ref)
                times[variant, "forward"] = time_ms(
                    cupy, lambda: conv.forward(x, taps, bias, out), args.repeat)
                times[variant, "kernel gradient"] = time_ms(
                    cupy, lambda: conv.kernel_gradient(x, grad), args.repeat)
            for op in ("forward", "kernel gradient"):
                rows.append(f"| {name} | {batch} | {op} | {1e3 * times['fused', op]:.0f} | "
                            f"{1e3 * times[None, op]:.0f} | " + " | ".join(
                                f"{1e3 * times[v, op]:.0f} ({errors[v, op]:.1e})"
                                for v in variants) + " |")
            print(rows[-2], rows[-1], sep="\n", flush=True)
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
