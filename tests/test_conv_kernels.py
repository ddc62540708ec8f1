"""The direct convolution kernels (backend/correlate.cu, backend/kernel_gradient.cu, driven by
`backend.conv_kernels`) against the ``cpu`` patch-matrix way, run on the CPU by the emulator
(tests/cuda_emulation.py); their NVRTC compile for every configuration the networks use; and
ptxas's register report (no spills) where nvcc is installed."""
import importlib.util
import re
import shutil
import subprocess
from pathlib import Path

import numpy
import pytest

import cuda_emulation
from xpnn import backend
from xpnn.backend import conv, conv_kernels
from xpnn.backend.conv import PaddedInput
from xpnn.backend.conv_kernels import Split, Tile

REPO = Path(__file__).resolve().parent.parent
TOLERANCE = {"float32": 2e-6, "float64": 1e-13}  # relative norm error against the cpu way


@pytest.fixture
def emulation():
    reason = cuda_emulation.unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    with cuda_emulation.emulating():
        yield


def backend_cpu():
    """The reference: the ``cpu`` way, inside an `emulation` block too."""
    return backend.using("cpu")


def conv_frame(x, k, stride=1):
    """A layer's forward frame: padding (k - 1) // 2."""
    p = (k - 1) // 2
    h, w = x.shape[1:3]
    return PaddedInput(x, p, (h + 2 * p, w + 2 * p))


def input_gradient_frame(g, k, stride, h, w):
    """The layer's input-gradient frame of an output gradient g: zero-inserted every `stride`."""
    p = (k - 1) // 2
    return PaddedInput(g, k - 1 - p, (h + k - 1, w + k - 1), stride)


# (name, x shape (N, H, W, C), O, k, stride): the networks' shapes at batch 3, and odd ones
SHAPES = [
    ("conv1-5x5-1to6-28x28", (3, 28, 28, 1), 6, 5, 1),
    ("conv2-5x5-6to16-14x14", (3, 14, 14, 6), 16, 5, 1),
    ("conv2-input-gradient-5x5-16to6", (3, 14, 14, 16), 6, 5, 1),
    ("block-3x3-16to16-14x14", (3, 14, 14, 16), 16, 3, 1),
    ("block-3x3-16to16-7x7", (3, 7, 7, 16), 16, 3, 1),
    ("3x3-64to64-7x7", (2, 7, 7, 64), 64, 3, 1),
    ("3x3-3to5-5x7", (3, 5, 7, 3), 5, 3, 1),
    ("3x3-4to6-9x8-stride2", (3, 9, 8, 4), 6, 3, 2),
    ("5x5-3to4-7x6-stride2", (2, 7, 6, 3), 4, 5, 2),
    ("4x4-2to3-8x7-stride3", (2, 8, 7, 2), 3, 4, 3),
    ("1x1-3to2-4x5", (2, 4, 5, 3), 2, 1, 1),
]
IDS = [shape[0] for shape in SHAPES]


def frames_of(shape, rng, dtype):
    """[(what, frame, O, k, stride)]: the forward frame of `shape`, and for a stride above 1
    the input-gradient frame (zero-inserted, step = stride) of its output."""
    _, x_shape, o, k, stride = shape
    x = rng.standard_normal(x_shape).astype(dtype)
    forward = conv_frame(x, k, stride)
    frames = [("forward", forward, o, k, stride)]
    if stride > 1:
        n, h, w, c = x_shape
        ho, wo = forward.output_size(k, stride)
        g = rng.standard_normal((n, ho, wo, o)).astype(dtype)
        frames.append(("input-gradient", input_gradient_frame(g, k, stride, h, w), c, k, 1))
    return frames


def relative_error(got, expected):
    return float(numpy.linalg.norm(got - expected) / max(numpy.linalg.norm(expected), 1e-300))


def poisoned_empty(monkeypatch):
    """Make numpy.empty return NaN-filled arrays, so an element a kernel never wrote shows."""
    real_empty = numpy.empty

    def empty(shape, dtype=float, order="C", **kwargs):
        array = real_empty(shape, dtype=dtype, order=order, **kwargs)
        if array.dtype.kind == "f":
            array.fill(numpy.nan)
        return array
    monkeypatch.setattr(numpy, "empty", empty)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_direct_kernels_match_the_cpu_way_writing_every_element(shape, dtype, rng, monkeypatch):
    reason = cuda_emulation.unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    for what, frame, o, k, stride in frames_of(shape, rng, dtype):
        c = frame.x.shape[3]
        kernel = rng.standard_normal((o, c, k, k)).astype(dtype)
        bias = rng.standard_normal(o).astype(dtype)
        expected = conv.correlate(frame, kernel, stride, bias)
        grad = rng.standard_normal(expected.shape).astype(dtype)
        expected_dk = conv.kernel_gradient(frame, grad, k, stride)
        with monkeypatch.context() as patch, cuda_emulation.emulating():
            poisoned_empty(patch)
            got = conv.correlate(frame, kernel, stride, bias)
            got_no_bias = conv.correlate(frame, kernel, stride)
            got_dk = conv.kernel_gradient(frame, grad, k, stride)
        assert got.shape == expected.shape and got.dtype == expected.dtype
        assert got.flags.c_contiguous
        assert relative_error(got, expected) <= TOLERANCE[dtype], what
        assert relative_error(got_no_bias, expected - bias) <= TOLERANCE[dtype], what
        assert got_dk.shape == (o, c, k, k) and got_dk.dtype == expected_dk.dtype
        assert relative_error(got_dk, expected_dk) <= TOLERANCE[dtype], what


@pytest.mark.parametrize("tile", [Tile(1, 1, 1), Tile(2, 3, 2), Tile(3, 4, 4), Tile(8, 16, 4),
                                  Tile(5, 7, 1)], ids=str)
def test_every_tile_gives_the_same_correlation(tile, emulation, rng):
    """Tiles that split a row and the channels unevenly (the benchmark tries several)."""
    x = rng.standard_normal((2, 6, 9, 4))
    kernel, bias = rng.standard_normal((6, 4, 3, 3)), rng.standard_normal(6)
    frame = conv_frame(x, 3)
    with backend_cpu():
        expected = conv.correlate(frame, kernel, 1, bias)
    got = conv_kernels.correlate(frame, kernel, 1, bias, tile=tile)
    assert relative_error(got, expected) <= 1e-13


@pytest.mark.parametrize("split", [Split(1, 1), Split(2, 3), Split(6, 100)], ids=str)
def test_every_split_gives_the_same_kernel_gradient(split, emulation, rng):
    x = rng.standard_normal((3, 5, 6, 2))
    frame = conv_frame(x, 3)
    grad = rng.standard_normal((3, 5, 6, 6))
    with backend_cpu():
        expected = conv.kernel_gradient(frame, grad, 3, 1)
    got = conv_kernels.kernel_gradient(frame, grad, 3, 1, split=split)
    assert relative_error(got, expected) <= 1e-13


def test_a_kernel_view_is_read_in_place_whatever_its_strides(emulation, rng, monkeypatch):
    """The input gradient's kernel, flipped and transposed, inside a larger buffer (as a flat
    parameter store would hold it): packed straight from the view, no copy made; a kernel of
    another dtype is converted."""
    buffer = rng.standard_normal(7 + 4 * 3 * 3 * 3)
    weight = buffer[7:].reshape(4, 3, 3, 3)                  # (O, C, k, k) of a forward
    flipped = weight.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1]  # (C, O, k, k), negative strides
    frame = conv_frame(rng.standard_normal((2, 5, 6, 4)), 3)
    with backend_cpu():
        expected = conv.correlate(frame, flipped, 1)
    copies = []
    real = numpy.ascontiguousarray
    monkeypatch.setattr(numpy, "ascontiguousarray",
                        lambda array, *args, **kwargs: copies.append(array.shape) or
                        real(array, *args, **kwargs))
    got = conv_kernels.correlate(frame, flipped, 1)
    assert (3, 4, 3, 3) not in copies
    assert relative_error(got, expected) <= 1e-13
    got32 = conv_kernels.correlate(PaddedInput(frame.x.astype("float32"), frame.offset,
                                         frame.size_hw), flipped, 1)
    assert got32.dtype == numpy.float32 and relative_error(got32, expected) <= 1e-6


TF32_SHAPES = [shape for shape in SHAPES if shape[0] in (
    "conv1-5x5-1to6-28x28", "conv2-input-gradient-5x5-16to6", "block-3x3-16to16-7x7",
    "3x3-4to6-9x8-stride2", "5x5-3to4-7x6-stride2")] + [("3x3-5to20-6x5", (2, 6, 5, 5), 20, 3, 1)]


@pytest.mark.parametrize("shape", TF32_SHAPES, ids=[shape[0] for shape in TF32_SHAPES])
def test_the_tf32_variant_is_within_tf32_rounding_of_the_cpu_way(shape, rng, monkeypatch):
    """Each warp's 32 threads run as cooperating fibers with the emulator's mma; inputs rounded
    to 10 mantissa bits leave about 3e-4 of relative error. Odd channel counts (taps not a
    multiple of 8, O not of 16), strides, zero-inserted frames; every element written."""
    reason = cuda_emulation.unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    for what, frame, o, k, stride in frames_of(shape, rng, "float32"):
        c = frame.x.shape[3]
        kernel = rng.standard_normal((o, c, k, k)).astype("float32")
        bias = rng.standard_normal(o).astype("float32")
        expected = conv.correlate(PaddedInput(frame.x.astype("float64"), frame.offset,
                                              frame.size_hw, frame.step),
                                  kernel.astype("float64"), stride, bias.astype("float64"))
        with monkeypatch.context() as patch, cuda_emulation.emulating():
            poisoned_empty(patch)
            got = conv_kernels.correlate_tf32(frame, kernel, stride, bias)
        assert got.dtype == numpy.float32 and got.shape == expected.shape
        assert 1e-5 < relative_error(got, expected) <= 1e-3, what  # rounded, yet close


def test_the_tf32_variant_takes_float32_only(emulation, rng):
    frame = conv_frame(rng.standard_normal((1, 4, 4, 2)), 3)
    with pytest.raises(TypeError, match="multiplies float32 arrays .*got float64"):
        conv_kernels.correlate_tf32(frame, numpy.zeros((2, 2, 3, 3)), 1)


def test_the_relu_epilogue_clamps_negatives_and_keeps_nan(emulation, rng):
    x = rng.standard_normal((2, 5, 5, 3)).astype("float32")
    x[0, 2, 2, 0] = numpy.nan
    kernel, bias = (rng.standard_normal((4, 3, 3, 3)).astype("float32"),
                    rng.standard_normal(4).astype("float32"))
    frame = conv_frame(x, 3)
    with backend_cpu():
        expected = numpy.maximum(conv.correlate(frame, kernel, 1, bias), 0)
    got = conv_kernels.correlate(frame, kernel, 1, bias, relu=True)
    assert numpy.isnan(got).sum() == numpy.isnan(expected).sum() > 0
    numpy.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_sum_parts_adds_in_a_fixed_order(emulation, rng):
    """Exactly the sums of groups of rows, then of the groups' sums, in order (what makes the
    kernel gradient the same on every run)."""
    def reference(parts):
        while parts.shape[0] > 1:
            count = parts.shape[0]
            group = min(count, max(conv_kernels.MIN_GROUP, _isqrt_up(count)))
            sums = []
            for start in range(0, count, group):
                total = parts[start].copy()
                for row in parts[start + 1:start + group]:
                    total += row
                sums.append(total)
            parts = numpy.stack(sums)
        return parts[0]
    for count in (1, 5, 8, 9, 100, 1001):
        parts = rng.standard_normal((count, 7)).astype("float32")
        numpy.testing.assert_array_equal(conv_kernels.sum_parts(parts), reference(parts))


def _isqrt_up(count):
    root = int(count ** 0.5)
    while root * root < count:
        root += 1
    while root > 1 and (root - 1) * (root - 1) >= count:
        root -= 1
    return root


def test_a_misaligned_input_takes_narrower_loads(emulation, rng):
    """A contiguous input that starts 4 bytes past a 16-byte boundary: the tile's channel loads
    narrow to fit (a forced 16-byte load would fault on a GPU, and faults in the emulator)."""
    buffer = numpy.empty(2 * 5 * 5 * 4 + 4, dtype="float32")
    start = (-buffer.ctypes.data % 16) // 4 + 1       # 4 bytes past a 16-byte boundary
    x = buffer[start:start + 200].reshape(2, 5, 5, 4)
    x[...] = rng.standard_normal(x.shape)
    kernel = rng.standard_normal((4, 4, 3, 3)).astype("float32")
    frame = conv_frame(x, 3)
    with backend_cpu():
        expected = conv.correlate(frame, kernel, 1)
    assert conv_kernels.correlate_tile(2, 5, 5, 4, 4, 3, 4, x.ctypes.data).cv == 1
    assert relative_error(conv_kernels.correlate(frame, kernel, 1), expected) <= 1e-6
    with pytest.raises(RuntimeError, match="misaligned vector load"):
        conv_kernels.correlate(frame, kernel, 1, tile=Tile(4, 4, 4))


def test_bad_shapes_get_a_one_line_error(emulation, rng):
    frame = conv_frame(rng.standard_normal((2, 5, 5, 3)), 3)
    with pytest.raises(ValueError, match=r"kernel must be \(O, 3, k, k\).*got \(4, 2, 3, 3\)"):
        conv_kernels.correlate(frame, numpy.zeros((4, 2, 3, 3)), 1)
    with pytest.raises(ValueError, match=r"bias must have shape \(4,\)"):
        conv_kernels.correlate(frame, numpy.zeros((4, 3, 3, 3)), 1, numpy.zeros(5))
    with pytest.raises(ValueError, match=r"grad must be \(2, 5, 5, O\)"):
        conv_kernels.kernel_gradient(frame, numpy.zeros((2, 4, 5, 4)), 3, 1)


def test_the_tiles_stay_within_their_register_budget():
    for n, hw, c, o, k in [(1000, 14, 16, 16, 3), (100, 28, 1, 6, 5), (1000, 7, 64, 64, 3),
                           (3, 5, 3, 17, 5)]:
        for itemsize in (4, 8):
            tile = conv_kernels.correlate_tile(n, hw, hw, c, o, k, itemsize)
            assert tile.px * tile.ot * itemsize <= conv_kernels.TILE_BYTES
            assert tile.cv == 1 or tile.cv * k * tile.ot * itemsize <= conv_kernels.PREFETCH_BYTES
            assert c % tile.cv == 0 and 1 <= tile.px <= conv_kernels.MAX_PX
    split = conv_kernels.gradient_split(14000, 16, 64, 3)
    assert split.og == 16 and 64 % split.og == 0


# -- compiled for the device, without one -----------------------------------------------------------

# (C, O, H, k) of every convolution in configs/*.yaml, at the batch sizes the benchmark times;
# each also as its input gradient (a correlation of O channels into C).
NETWORK_CONVS = [(1, 6, 28, 5), (6, 16, 14, 5), (16, 16, 14, 3), (16, 16, 7, 3)]


def network_configurations():
    """{(file, dtype, defines)} of every kernel configuration the networks and the benchmark
    launch (ReLU epilogue and TF32 variant included)."""
    found = set()
    for dtype, itemsize in (("float32", 4), ("float64", 8)):
        for batch in (100, 1000):
            for c, o, hw, k in NETWORK_CONVS:
                for cc, oo in ((c, o), (o, c)):
                    tile = conv_kernels.correlate_tile(batch, hw, hw, cc, oo, k, itemsize)
                    for relu in (False, True) if dtype == "float32" else (False,):
                        kernel = conv_kernels.correlate_kernel(k, 1, 1, tile, relu)
                        found.add((kernel.file, dtype, kernel.defines))
                split = conv_kernels.gradient_split(batch * hw, c, o, k)
                align = conv_kernels._alignment(o * itemsize, split.og * itemsize)
                kernel = conv_kernels.gradient_kernel(k, 1, 1, split.og, align)
                found.add((kernel.file, dtype, kernel.defines))
                if dtype == "float32":
                    kernel = conv_kernels.CORRELATE_TF32.specialised(XPNN_K=k, XPNN_STRIDE=1,
                                                                     XPNN_STEP=1)
                    found.add((kernel.file, dtype, kernel.defines))
    return sorted(found)


def _compile_script():
    spec = importlib.util.spec_from_file_location(
        "compile_cuda_kernels", REPO / "scripts" / "compile_cuda_kernels.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _options(file, dtype, defines):
    kernel = {"correlate.cu": conv_kernels.CORRELATE,
              "correlate_tf32.cu": conv_kernels.CORRELATE_TF32,
              "kernel_gradient.cu": conv_kernels.KERNEL_GRADIENT}[file]
    return kernel.specialised(**dict(defines)).compile_options(dtype)


def test_every_network_configuration_compiles_with_nvrtc():
    script = _compile_script()
    nvrtc = script.find_nvrtc()
    if nvrtc is None:
        pytest.skip("NVRTC not installed (pip install nvidia-cuda-nvrtc-cu12)")
    for file, dtype, defines in network_configurations():
        ok, log = script.compile_source(nvrtc, (REPO / "backend" / file).read_text(), file,
                                        "compute_90", _options(file, dtype, defines))
        assert ok, f"{file} {dtype} {defines}:\n{log}"


@pytest.mark.slow
def test_no_network_configuration_spills_registers(tmp_path):
    """ptxas for sm_90 (H100/H200): every configuration keeps its values in registers."""
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc not installed")
    for file, dtype, defines in network_configurations():
        completed = subprocess.run(
            [nvcc, "-arch=sm_90", "-Xptxas", "-v", "-cubin", str(REPO / "backend" / file),
             "-o", str(tmp_path / "kernel.cubin"), *_options(file, dtype, defines)],
            capture_output=True, text=True)
        assert completed.returncode == 0, completed.stderr
        spills = re.findall(r"(\d+) bytes spill stores", completed.stderr)
        assert spills and all(count == "0" for count in spills), \
            f"{file} {dtype} {defines}:\n{completed.stderr}"


# -- the device benchmark, dry run ----------------------------------------------------------------

def test_the_benchmark_dry_run_times_and_checks_every_shape(capsys):
    """benchmarks/conv_kernels.py on the CPU, its kernels emulated: every shape and operation
    gets a row with both ways' errors within bounds, and each network its step total."""
    if cuda_emulation.unavailable_reason() is not None:
        pytest.skip(cuda_emulation.unavailable_reason())
    from benchmarks import conv_kernels as bench
    assert bench.main(["--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    tf32_header = lines.index(next(line for line in lines if line.startswith("TF32")))
    lines, tf32 = lines[:tf32_header], lines[tf32_header + 1:]
    for name, c, _, _, _ in bench.SHAPES:
        ops = [line.split()[-6] for line in lines if line.startswith(name)]
        assert ops == (["fwd", "dw"] if c == 1 else ["fwd", "dx", "dw"]), lines
    assert sum("(new + maximum | ReLU epilogue)" in line for line in lines) == len(bench.SHAPES)
    assert sum("convolutions per step" in line for line in lines) == len(bench.NETWORKS)
    assert [line.split()[-5] for line in tf32] == ["fwd", "fwd", "dx", "fwd", "dx", "fwd", "dx"]
    assert not any("FAIL" in line for line in lines + tf32)


def test_the_benchmark_fails_a_wrong_kernel(monkeypatch, capsys):
    if cuda_emulation.unavailable_reason() is not None:
        pytest.skip(cuda_emulation.unavailable_reason())
    from benchmarks import conv_kernels as bench
    real = conv_kernels.kernel_gradient
    monkeypatch.setattr(conv_kernels, "kernel_gradient",
                        lambda *args, **kwargs: real(*args, **kwargs) * 1.001)
    monkeypatch.setattr(bench, "SHAPES", bench.SHAPES[3:])
    assert bench.main(["--dry-run"]) == 1
    assert "FAIL block 3x3 16->16 7x7 batch 2 dw" in capsys.readouterr().out


def test_the_benchmark_sweep_prints_the_fastest_choices(monkeypatch, capsys):
    """--sweep's path on the CPU, with two candidates of each kind and one shape (a full sweep
    compiles dozens of kernels)."""
    if cuda_emulation.unavailable_reason() is not None:
        pytest.skip(cuda_emulation.unavailable_reason())
    from benchmarks import conv_kernels as bench
    monkeypatch.setattr(bench, "SHAPES", bench.SHAPES[3:])
    monkeypatch.setattr(bench, "SWEEP_TILES", [Tile(2, 4, 4), Tile(7, 8, 1)])
    monkeypatch.setattr(bench, "SWEEP_SPLITS", [(16, 1), (8, 3)])
    assert bench.main(["--dry-run", "--sweep"]) == 0
    sweeps = [line.split("us")[-1].strip() for line in capsys.readouterr().out.splitlines()
              if " sweep " in line]
    assert sorted(sweeps) == sorted(["Tile(px=2, ot=4, cv=4)", "Tile(px=7, ot=8, cv=1)"] * 2
                                    + ["Split(og=16, rows_per_chunk=1)",
                                       "Split(og=8, rows_per_chunk=3)"]), sweeps


def test_the_benchmark_tf32_table_reports_and_bounds_the_variant(monkeypatch, capsys):
    """The TF32 table passes the emulated tensor-core kernel, and fails a result off by 1%."""
    if cuda_emulation.unavailable_reason() is not None:
        pytest.skip(cuda_emulation.unavailable_reason())
    from benchmarks import conv_kernels as bench
    shapes = bench.SHAPES[2:3]
    with cuda_emulation.emulating():
        timer = bench.Timer(numpy, warmup=0, repeats=1)
        rows, failures = bench.measure(numpy, shapes, [2], timer)
        assert failures == [] and bench.tf32_table(numpy, shapes, [2], timer, rows) == []
        real = conv_kernels.correlate_tf32
        monkeypatch.setattr(conv_kernels, "correlate_tf32", lambda *args: real(*args) * 1.01)
        failed = bench.tf32_table(numpy, shapes, [2], timer, rows)
    assert [(op, bound) for _, _, op, _, bound in failed] == [("fwd tf32", 2e-3),
                                                              ("dx tf32", 2e-3)]
    assert "TF32 tensor cores" in capsys.readouterr().out


def test_a_tf32_mode_correlates_on_the_tensor_cores(rng):
    """The mode's precision reaches the convolution: in a tf32 mode the fused correlation is
    the TF32 kernel (within TF32 rounding of float64, and not the float32 kernel's bits)."""
    reason = cuda_emulation.unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    x = rng.standard_normal((2, 6, 6, 8)).astype("float32")
    kernel = rng.standard_normal((16, 8, 3, 3)).astype("float32")
    padded = PaddedInput(x, 1, (8, 8))
    expected = conv.correlate(PaddedInput(x.astype("float64"), 1, (8, 8)),
                              kernel.astype("float64"), 1)
    results = {}
    for precision in ("fp32", "tf32"):
        with cuda_emulation.emulating(), backend.running_on(
                backend.CPU, backend.Mode("fused", precision=precision)):
            results[precision] = conv.correlate(padded, kernel, 1)
    error = {p: numpy.abs(r - expected).max() / numpy.abs(expected).max()
             for p, r in results.items()}
    assert error["fp32"] < 1e-6 < error["tf32"] < 3e-3, error


def test_the_fused_input_gradient_takes_the_patch_matrices(rng, monkeypatch):
    """A correlation with a kernel view (the input gradient's flipped weights) computes as the
    ``gpu`` patch matrices do, bit for bit, until a GPU confirms that the H200's resnet_stem gap
    was a ReLU decision, not the direct kernel (tests/test_fused_parity.py); a contiguous kernel
    (every forward) takes the direct kernel."""
    reason = cuda_emulation.unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    x = rng.standard_normal((2, 6, 6, 6)).astype("float32")
    weights = rng.standard_normal((6, 6, 3, 3)).astype("float32")
    flipped = weights.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1]
    padded = PaddedInput(x, 1, (8, 8))
    calls = []
    direct = conv_kernels.correlate
    monkeypatch.setattr(conv_kernels, "correlate", lambda *args: calls.append(1) or direct(*args))
    with cuda_emulation.emulating():
        through_view = conv.correlate(padded, flipped, 1)
        assert calls == []
        conv.correlate(padded, numpy.ascontiguousarray(flipped), 1)
        assert calls == [1]
    with backend.using("gpu"):
        expected = conv.correlate(padded, flipped, 1)
    numpy.testing.assert_array_equal(through_view, expected)
