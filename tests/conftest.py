"""Shared fixtures: the device every backend-aware test runs on, dtypes, and test inputs.

`device` runs a test in each way a layer can compute: on NumPy as the CPU does, on NumPy taking
the GPU's code paths, on NumPy with the fused CUDA kernels emulated on the CPU, and on a GPU
(CuPy) without and with the fused kernels. The GPU cases are marked `gpu` (deselect with
``-m "not gpu"``) and skip, with the reason, where CuPy or a CUDA device is missing. Nothing here
imports CuPy unless a GPU case actually runs.
"""
import functools
import os

# One BLAS thread: the test arrays are tiny, and on a shared 2-core machine OpenBLAS's second
# thread waiting for a busy core made a batch-2 resnet forward 25x slower (40 ms against 1.5 ms).
# Must be set before NumPy is first imported; set the variable yourself to override.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
# One process per `xpnn train` unless a test asks for ranks: by default a CPU run would start one
# MPI rank per core (`cli.ranks.default_processes`, tested on its own), in every test.
os.environ["XPNN_PROCESSES"] = "1"

import numpy  # noqa: E402  (after the thread setting above)
import pytest  # noqa: E402

import cuda_emulation  # noqa: E402  (tests/cuda_emulation.py)
from xpnn import backend  # noqa: E402


@functools.lru_cache(maxsize=None)
def _gpu_skip_reason():
    """Why GPU tests cannot run here, or None; asked once per session (importing CuPy is slow)."""
    return backend.gpu_unavailable_reason()


DEVICE_CASES = ["cpu", "cpu-gpu-code", "cpu-fused-emulated",
                pytest.param("gpu", marks=pytest.mark.gpu),
                pytest.param("gpu-fused", marks=pytest.mark.gpu)]


@pytest.fixture(params=DEVICE_CASES)
def device(request):
    """A `backend.Device`, one case per implementation of the backend's primitives
    (`backend.dispatch`) on each device:

    cpu: NumPy, ``cpu`` implementations. cpu-gpu-code: NumPy running the ``gpu``
    implementations (the GPU's array code). cpu-fused-emulated: NumPy running the ``fused`` ones,
    their CUDA kernels emulated on the CPU (tests/cuda_emulation.py; skipped without a C++
    compiler). gpu: CuPy. gpu-fused: CuPy with the fused CUDA kernels. The gpu cases skip, with
    the reason, where CuPy or a CUDA device is missing.
    """
    case = request.param
    if case.startswith("gpu"):
        reason = _gpu_skip_reason()
        if reason is not None:
            pytest.skip(f"no usable GPU: {reason}")
        with backend.using("fused" if case == "gpu-fused" else None):
            yield backend.get_device("gpu")
    elif case == "cpu-gpu-code":
        with backend.using("gpu"):
            yield backend.CPU
    elif case == "cpu-fused-emulated":
        reason = cuda_emulation.unavailable_reason()
        if reason is not None:
            pytest.skip(reason)
        with cuda_emulation.emulating():
            yield backend.CPU
    else:
        yield backend.CPU


@pytest.fixture(params=["float32", "float64"])
def dtype(request):
    """A floating dtype name that layers accept."""
    return request.param


@pytest.fixture
def rng():
    """A fresh seeded host generator, so every test draws the same numbers on every run."""
    return numpy.random.default_rng(1234)


def away_from_zero(rng, shape, low=0.1):
    """Random host float64 values with |x| >= `low`: ReLU-safe (no kink within a finite-difference
    step) and of either sign."""
    u = rng.standard_normal(shape)
    return numpy.where(u >= 0, 1.0, -1.0) * (low + numpy.abs(u))


def distinct(rng, shape, scale=2.0):
    """Random host float64 values in (-scale/2, scale/2) without ties (a scaled permutation),
    spaced `scale / size` apart and none nearer 0 than half that: max-pool windows have one clear
    maximum and ReLUs no kink within a finite-difference step."""
    size = int(numpy.prod(shape))
    return ((rng.permutation(size).reshape(shape) + 0.5) / size - 0.5) * scale


@pytest.fixture
def make_input():
    """`make_input(rng, shape, kind="safe"|"distinct")`: host float64 test input (see above)."""
    def make(rng, shape, kind="safe"):
        if kind == "distinct":
            return distinct(rng, shape)
        return away_from_zero(rng, shape)
    return make
