"""The direct convolution kernels (`backend.conv_kernels`) against the patch-matrix way they
replaced as ``fused`` (im2col.cu beside this file, then a cuBLAS product), per convolution of
resnet, resnet_deep and lenet: forward, input gradient and kernel gradient, each timed alone on
the GPU, and two opt-in variants beside them (a ReLU epilogue, TF32 tensor cores).

    python -m benchmarks.conv_kernels                   # on a GPU (CuPy): the table, < 60 s
    python -m benchmarks.conv_kernels --sweep --batch-sizes 1000   # also other tiles, splits
    python -m benchmarks.conv_kernels --dry-run         # on the CPU, kernels emulated, toy sizes

Each figure is the median of `--repeats` calls (after `--warmup`), each bracketed by CUDA
events. `--sweep` compiles a few dozen more kernels (minutes on a fresh machine) and prints, per
operation, the three fastest of `SWEEP_TILES` or `SWEEP_SPLITS`: what to tune
`conv_kernels.correlate_tile` and `gradient_split` by. Each result is checked against a float64 reference (the ``gpu`` array code on float64
copies of the same inputs) by its relative norm error; a float32 error above `MAX_ERROR` of a
new kernel fails the run (exit status 1). The last lines add up each network's convolutions in
one training step (forward and kernel gradient of every conv, input gradient of all but the
first). On a GPU, forward and input gradient are also timed with the TF32 tensor-core variant
(`conv_kernels.correlate_tf32`; its error bound is `TF32_MAX_ERROR`), and the forward with the
ReLU epilogue against the FP32 kernel then CuPy's maximum. The dry run checks the script itself;
its timings mean nothing.
"""
import argparse
import functools
import statistics
import sys
import time
from pathlib import Path

import numpy

from xpnn.backend import conv, conv_kernels
from xpnn.backend.conv import PaddedInput
from xpnn.backend.conv_kernels import Split, Tile
from xpnn.backend.cuda import CudaKernel
from xpnn.backend.device import get_array_module
from xpnn.backend.matmul import matmul

MAX_ERROR = 1e-5  # relative norm error of float32 results against float64
TF32_MAX_ERROR = 2e-3  # the same for TF32 products (10-bit mantissas), float32 sums
# (name, C, O, H = W, k): every convolution shape of configs/*.yaml (stride 1, padding k // 2)
SHAPES = [("conv1 5x5 1->6 28x28", 1, 6, 28, 5), ("conv2 5x5 6->16 14x14", 6, 16, 14, 5),
          ("block 3x3 16->16 14x14", 16, 16, 14, 3), ("block 3x3 16->16 7x7", 16, 16, 7, 3)]
# how many of each shape a network's step runs
NETWORKS = {"lenet": {SHAPES[0][0]: 1, SHAPES[1][0]: 1},
            "resnet": {SHAPES[0][0]: 1, SHAPES[1][0]: 1, SHAPES[2][0]: 4},
            "resnet_deep": {SHAPES[0][0]: 1, SHAPES[1][0]: 1, SHAPES[2][0]: 4, SHAPES[3][0]: 4}}
OPS = ("fwd", "dx", "dw")
SWEEP_TILES = [Tile(px, ot, cv) for px in (2, 4, 7) for ot in (4, 8, 16) for cv in (1, 2, 4)]
say = functools.partial(print, flush=True)  # each line as soon as it is measured
SWEEP_SPLITS = [(og, rows) for og in (4, 8, 16) for rows in (1, 2, 4, 8, 16, 32)]
IM2COL_ROWS_PER_ITEM = 32  # rows of one column that one thread of im2col.cu fills
# an absolute path: the loader reads it as it is (its own .cu files are named relative to it)
IM2COL = CudaKernel(str(Path(__file__).with_name("im2col.cu")), "xpnn_im2col",
                    ["int64"] + ["int32"] * 12)


def im2col(frame, k, stride=1):
    """The (N * Ho * Wo, C * k * k) patch matrix of `frame` (a `PaddedInput`) by im2col.cu,
    columns ordered (C, kh, kw) as an (O, C, k, k) kernel lies."""
    xp = get_array_module(frame.x)
    x = xp.ascontiguousarray(frame.x)
    n, h, w, c = x.shape
    ho, wo = frame.output_size(k, stride)
    rows, cols = n * ho * wo, c * k * k
    col = xp.empty((rows, cols), dtype=x.dtype)
    work = -(-rows // IM2COL_ROWS_PER_ITEM) * cols
    IM2COL(work, (x, col, work, rows, cols, IM2COL_ROWS_PER_ITEM, h, w, c, ho, wo, k, stride,
                  frame.offset, frame.step), x.dtype)
    return col


def im2col_correlate(frame, kernel, bias=None):
    """`conv.correlate` (stride 1) the old way: im2col.cu, then one product."""
    o, k = kernel.shape[0], kernel.shape[2]
    out = get_array_module(frame.x).empty((frame.x.shape[0], *frame.output_size(k, 1), o),
                                          dtype=frame.x.dtype)
    matmul(im2col(frame, k), kernel.reshape(o, -1).T, out=out.reshape(-1, o))
    if bias is not None:
        out += bias
    return out


def im2col_kernel_gradient(frame, grad, k):
    """`conv.kernel_gradient` (stride 1) the old way: im2col.cu, then one product."""
    o, c = grad.shape[3], frame.x.shape[3]
    return matmul(im2col(frame, k).T, grad.reshape(-1, o)).T.reshape(o, c, k, k)


class Problem:
    """One convolution's three operations on float32 inputs (`xp` arrays), with float64
    references. `run(op, way)` returns the result of `op` by ``old``, ``new`` or (fwd and dx)
    ``tf32``."""

    def __init__(self, xp, n, c, o, hw, k, seed=0):
        rng = numpy.random.default_rng(seed)
        p = (k - 1) // 2
        self.k, self.p, self.hw = k, p, hw

        def array(*shape):
            return rng.standard_normal(shape).astype("float32")
        host = {"x": array(n, hw, hw, c), "kernel": array(o, c, k, k) * (2 / (c * k * k)) ** 0.5,
                "bias": array(o), "grad": array(n, hw, hw, o)}
        self.f32 = {name: xp.asarray(value) for name, value in host.items()}
        self.f64 = {name: xp.asarray(value.astype("float64")) for name, value in host.items()}

    def frames(self, arrays):
        k, p, hw = self.k, self.p, self.hw
        forward = PaddedInput(arrays["x"], p, (hw + 2 * p, hw + 2 * p))
        backward = PaddedInput(arrays["grad"], k - 1 - p, (hw + k - 1, hw + k - 1), 1)
        flipped = arrays["kernel"].transpose(1, 0, 2, 3)[:, :, ::-1, ::-1]  # as ConvLayer's
        return forward, backward, flipped

    def run(self, op, way, f64=False, tile=None, split=None, relu=False):
        arrays = self.f64 if f64 else self.f32
        forward, backward, flipped = self.frames(arrays)
        if way == "tf32":
            frame, kernel, bias = ((forward, arrays["kernel"], arrays["bias"]) if op == "fwd"
                                   else (backward, flipped, None))
            return conv_kernels.correlate_tf32(frame, kernel, 1, bias)
        if op == "fwd":
            if way == "old" and f64:
                return conv.correlate_by_patches(forward, arrays["kernel"], 1, arrays["bias"],
                                                 conv.PATCHES["gpu"])
            if way == "old":
                return im2col_correlate(forward, arrays["kernel"], arrays["bias"])
            return conv_kernels.correlate(forward, arrays["kernel"], 1, arrays["bias"],
                                          relu=relu, tile=tile)
        if op == "dx":
            if way == "old" and f64:
                return conv.correlate_by_patches(backward, flipped, 1, None, conv.PATCHES["gpu"])
            if way == "old":
                return im2col_correlate(backward, flipped)
            return conv_kernels.correlate(backward, flipped, 1, tile=tile)
        if way == "old" and f64:
            return conv.kernel_gradient_by_patches(forward, arrays["grad"], self.k, 1,
                                                   conv.PATCHES["gpu"])
        if way == "old":
            return im2col_kernel_gradient(forward, arrays["grad"], self.k)
        return conv_kernels.kernel_gradient(forward, arrays["grad"], self.k, 1, split=split)


class Timer:
    """Median microseconds of a call: CUDA events on a GPU, the host clock on the CPU."""

    def __init__(self, xp, warmup, repeats):
        self.xp, self.warmup, self.repeats = xp, warmup, repeats

    def __call__(self, call):
        for _ in range(self.warmup):
            call()
        times = []
        if self.xp.__name__ == "cupy":
            start, end = self.xp.cuda.Event(), self.xp.cuda.Event()
            for _ in range(self.repeats):
                start.record()
                call()
                end.record()
                end.synchronize()
                times.append(self.xp.cuda.get_elapsed_time(start, end) * 1000)
        else:
            for _ in range(self.repeats):
                begin = time.perf_counter()
                call()
                times.append((time.perf_counter() - begin) * 1e6)
        return statistics.median(times)


def relative_error(xp, got, expected):
    got = got.astype("float64")
    return float(xp.linalg.norm(got - expected) / xp.linalg.norm(expected))


def measure(xp, shapes, batches, timer, sweep=False, out=say):
    """Print the table; return (rows, failures). rows: {(name, batch, op): (old_us, new_us)}."""
    out(f"{'shape':24} {'batch':>5} {'op':4} {'old us':>9} {'new us':>9} {'speed-up':>8} "
        f"{'old err':>9} {'new err':>9}")
    rows, failures = {}, []
    for name, c, o, hw, k in shapes:
        for n in batches:
            problem = Problem(xp, n, c, o, hw, k)
            for op in OPS:
                if op == "dx" and c == 1:  # the first layer needs no input gradient
                    continue
                reference = problem.run(op, "old", f64=True)
                errors = [relative_error(xp, problem.run(op, way), reference)
                          for way in ("old", "new")]
                old_us = timer(lambda: problem.run(op, "old"))
                new_us = timer(lambda: problem.run(op, "new"))
                rows[name, n, op] = old_us, new_us
                flag = "" if errors[1] <= MAX_ERROR else "  FAIL"
                if flag:
                    failures.append((name, n, op, errors[1], MAX_ERROR))
                out(f"{name:24} {n:5d} {op:4} {old_us:9.1f} {new_us:9.1f} "
                    f"{old_us / new_us:7.2f}x {errors[0]:9.2e} {errors[1]:9.2e}{flag}")
                if op == "fwd":
                    failures += _relu_row(xp, problem, reference, timer, out, (name, n))
                if sweep:
                    _sweep(xp, problem, op, reference, timer, out)
    return rows, failures


def _relu_row(xp, problem, reference, timer, out, where):
    """Forward then ReLU: as two kernels (the new correlation, then CuPy's maximum) and with
    the ReLU epilogue; returns the failures (a wrong epilogue result)."""
    error = relative_error(xp, problem.run("fwd", "new", relu=True), xp.maximum(reference, 0))
    separate = timer(lambda: xp.maximum(problem.run("fwd", "new"), 0))
    fused = timer(lambda: problem.run("fwd", "new", relu=True))
    flag = "" if error <= MAX_ERROR else "  FAIL"
    out(f"{'':24} {'':5} {'+relu':4} {separate:9.1f} {fused:9.1f} {separate / fused:7.2f}x "
        f"{'':9} {error:9.2e}{flag}   (new + maximum | ReLU epilogue)")
    return [(*where, "fwd+relu", error, MAX_ERROR)] if flag else []


def tf32_table(xp, shapes, batches, timer, rows, out=say):
    """Forward and input gradient by the TF32 tensor-core variant beside the FP32 kernel (`rows`
    from `measure`); returns the failures (an error above `TF32_MAX_ERROR`). Run last: the
    variant is the least tried, and a fault would end the process."""
    out(f"{'TF32 tensor cores':24} {'batch':>5} {'op':4} {'fp32 us':>9} {'tf32 us':>9} "
        f"{'speed-up':>8} {'':9} {'tf32 err':>9}")
    failures = []
    for name, c, o, hw, k in shapes:
        for n in batches:
            problem = Problem(xp, n, c, o, hw, k)
            for op in ("fwd", "dx"):
                if op == "dx" and c == 1:
                    continue
                reference = problem.run(op, "old", f64=True)
                error = relative_error(xp, problem.run(op, "tf32"), reference)
                us = timer(lambda: problem.run(op, "tf32"))
                fp32_us = rows[name, n, op][1]
                flag = "" if error <= TF32_MAX_ERROR else "  FAIL"
                if flag:
                    failures.append((name, n, f"{op} tf32", error, TF32_MAX_ERROR))
                out(f"{name:24} {n:5d} {op:4} {fp32_us:9.1f} {us:9.1f} {fp32_us / us:7.2f}x "
                    f"{'':9} {error:9.2e}{flag}")
    return failures


def _sweep(xp, problem, op, reference, timer, out):
    """Time the other tiles (fwd, dx) or splits (dw) that fit, and print the fastest few."""
    results = []
    if op == "dw":
        o = problem.f32["grad"].shape[3]
        rows_total = problem.f32["x"].shape[0] * problem.hw
        candidates = [("split", Split(og, rows)) for og, rows in SWEEP_SPLITS
                      if o % og == 0 and rows <= rows_total]
    else:
        x = problem.f32["x"] if op == "fwd" else problem.f32["grad"]
        c = x.shape[3]
        o = problem.f32["kernel"].shape[0 if op == "fwd" else 1]
        candidates = [("tile", tile) for tile in SWEEP_TILES
                      if c % tile.cv == 0 and tile.ot <= max(4, o)
                      and tile.px * tile.ot * 4 <= 2 * conv_kernels.TILE_BYTES]
    for kind, choice in candidates:
        def call():
            return problem.run(op, "new", **{kind: choice})
        if relative_error(xp, call(), reference) > MAX_ERROR:
            out(f"{'':24} {'':5} sweep {choice}: wrong result")
            continue
        results.append((timer(call), choice))
    for us, choice in sorted(results, key=lambda result: result[0])[:3]:
        out(f"{'':24} {'':5} sweep {us:9.1f} us  {choice}")


def step_totals(rows, batches, out=say):
    """Each network's convolutions in one training step, old and new."""
    for network, counts in NETWORKS.items():
        for n in batches:
            totals = [0.0, 0.0]
            for name, times in counts.items():
                for op in OPS:
                    if (name, n, op) in rows:
                        for index in (0, 1):
                            totals[index] += times * rows[name, n, op][index]
            if totals[1]:
                out(f"{network:12} batch {n:5d}: convolutions per step {totals[0]:8.1f} us old, "
                    f"{totals[1]:8.1f} us new ({totals[0] / totals[1]:.2f}x)")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-sizes", default="100,1000")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=25)
    parser.add_argument("--sweep", action="store_true",
                        help="also time other tiles and splits, print the fastest three")
    parser.add_argument("--dry-run", action="store_true",
                        help="on the CPU, the kernels emulated (tests/cuda_emulation.py), at toy "
                             "sizes: checks this script, times nothing that matters")
    args = parser.parse_args(argv)
    batches = [int(size) for size in args.batch_sizes.split(",")]
    if args.dry_run:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
        import cuda_emulation
        with cuda_emulation.emulating():
            timer = Timer(numpy, warmup=1, repeats=3)
            rows, failures = measure(numpy, SHAPES, [2], timer, sweep=args.sweep)
            step_totals(rows, [2])
            failures += tf32_table(numpy, SHAPES, [2], timer, rows)
    else:
        import cupy
        name = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)["name"]
        print(f"device: {name.decode() if isinstance(name, bytes) else name}")
        timer = Timer(cupy, args.warmup, args.repeats)
        rows, failures = measure(cupy, SHAPES, batches, timer, sweep=args.sweep)
        step_totals(rows, batches)
        failures += tf32_table(cupy, SHAPES, batches, timer, rows)
    for name, n, op, error, bound in failures:
        print(f"FAIL {name} batch {n} {op}: relative error {error:.2e} > {bound:g}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
