"""The precisions of matrix products on a GPU (`dispatch.Mode.precision`): float32
throughout, or tensor-core inputs.

    fp32   float32 inputs, float32 arithmetic (the default, and the only one on the CPU)
    tf32   inputs rounded to TF32 (10 mantissa bits), float32 accumulation
    bf16   inputs rounded to bfloat16 (7 mantissa bits), float32 accumulation

Weights, activations and gradients stay float32: only the operands of each product are
rounded, as cuBLAS's FAST_TF32 and FAST_16BF compute types do. `round_inputs` is that rounding
in NumPy, which the tests' stand-in for cuBLAS applies, so the tolerances are checked on the
CPU too.
"""
import numpy

MANTISSA_BITS = {"tf32": 10, "bf16": 7}
# Largest relative error (max |error| / max |reference|, per tensor, against float64) that a
# whole network's outputs and gradients may show at each precision (`xpnn parity`, the tests).
PARITY_TOLERANCE = {"fp32": 1e-4, "tf32": 3e-3, "bf16": 3e-2}


def round_inputs(x, precision):
    """float32 `x` with its mantissa rounded (to nearest, ties to even) to `precision`'s bits,
    as a float32 array; `x` itself for fp32."""
    if precision == "fp32":
        return x
    drop = 23 - MANTISSA_BITS[precision]
    bits = numpy.ascontiguousarray(x, dtype=numpy.float32).view(numpy.uint32).astype(numpy.uint64)
    half, lowest = 1 << (drop - 1), (bits >> drop) & 1
    rounded = ((bits + half - 1 + lowest) >> drop) << drop
    finite = numpy.isfinite(x)
    return numpy.where(finite, rounded.astype(numpy.uint32).view(numpy.float32), x)
