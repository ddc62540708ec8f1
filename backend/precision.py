"""The precisions of matrix products on a GPU (`dispatch.Mode.precision`):

    fp32   float32 inputs, float32 arithmetic (the default, and the only one on the CPU)
    tf32   inputs rounded to TF32 (10 mantissa bits), float32 accumulation
    bf16   inputs rounded to bfloat16 (7 mantissa bits), float32 accumulation

Weights, activations and gradients stay float32: only the operands of each product are
rounded, as cuBLAS's FAST_TF32 and FAST_16BF compute types do."""
# Largest relative error (max |error| / max |reference|, per tensor, against float64) that a
# whole network's outputs and gradients may show at each precision (`xpnn parity`, the tests).
PARITY_TOLERANCE = {"fp32": 1e-4, "tf32": 3e-3, "bf16": 3e-2}
