"""Hostile input is read within bounds: configs (size, nesting, aliases), IDX headers, pictures
and paths of any bytes. Each case ends in one line, quickly, in little memory.

`run_bounded` runs the real command in a process limited to 1 GiB of address space and a
timeout, as `tests/test_fuzz.py` does.
"""
import gzip
import os
import resource
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy
import pytest
from click.testing import CliRunner

from xpnn.cli import cli
from xpnn.data import DataError, encode_idx, read_idx
from xpnn.nets import ConfigError
from xpnn.training.config import MAX_CONFIG_DEPTH, load_config, parse_yaml, read_config

REPO = Path(__file__).resolve().parent.parent
MEMORY_LIMIT = 1 << 30
LENET_TRAIN = "train: {epochs: 1, batch_size: 10, optimizer: sgd, lr: 0.1}\n"


def limit_memory():
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def run_bounded(*args, timeout=120, env=None):
    """`python run.py ARGS` with at most 1 GiB of memory; (exit code, stdout, stderr) as text
    (bytes that are not UTF-8 shown as escapes)."""
    done = subprocess.run([sys.executable, str(REPO / "run.py"), *args], cwd=REPO,
                          capture_output=True, timeout=timeout, preexec_fn=limit_memory,
                          env={**os.environ, "OPENBLAS_NUM_THREADS": "1", **(env or {})})
    return (done.returncode, done.stdout.decode("utf-8", "backslashreplace"),
            done.stderr.decode("utf-8", "backslashreplace"))


def assert_one_line(code, err, *fragments):
    assert code == 1, err
    assert "Traceback" not in err and "Warning" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def alias_bomb(levels=9, width=9):
    """A few hundred bytes of YAML whose aliases expand to width ** levels strings."""
    lines = [f"l0: &l0 [{', '.join(['lol'] * width)}]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


# -- configs --------------------------------------------------------------------------------------

def test_an_alias_bomb_is_refused_at_once_in_little_memory(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(alias_bomb() + f"model: *l{8}\n" + LENET_TRAIN)
    assert path.stat().st_size < 1500
    code, _, err = run_bounded("describe", "-c", str(path), timeout=60)
    assert_one_line(code, err, str(path), "more than 100,000 values once its aliases")
    code, _, err = run_bounded("describe", "-c", "lenet", "--set",
                               "train.lr=" + "[" + alias_bomb().replace("\n", ", ")[:-2]
                               .replace(": &", "_key: &") + "]", timeout=60)
    assert code == 2 and "Traceback" not in err and "more than 100,000 values" in err, err


def test_moderate_aliases_and_merge_keys_still_read():
    text = ("base: &base {epochs: 1, batch_size: 10, optimizer: sgd}\n"
            "train: {<<: *base, lr: 0.1}\nlist: &l [1, 2]\nagain: [*l, *l]\n")
    assert parse_yaml(text) == {"base": {"epochs": 1, "batch_size": 10, "optimizer": "sgd"},
                                "train": {"epochs": 1, "batch_size": 10, "optimizer": "sgd",
                                          "lr": 0.1},
                                "list": [1, 2], "again": [[1, 2], [1, 2]]}


@pytest.mark.parametrize("text, fragment", [
    ("[" * 3000 + "]" * 3000, "nested more than"),
    ("[" * 50000 + "]" * 50000, "nested more than"),
    ("".join(f"{' ' * depth}k{depth}:\n" for depth in range(600)) + " " * 600 + "v\n",
     "nested more than"),
    ("a: &a [1, *a]\n", "contains itself"),
    (f"- &a {'[' * 40}1{']' * 40}\n- &b {'[' * 40}*a{']' * 40}\n",
     "levels deep once its aliases"),
])
def test_deep_or_self_containing_yaml_is_one_line_error(tmp_path, text, fragment):
    path = tmp_path / "deep.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=fragment):
        read_config(path)
    code, _, err = run_bounded("describe", "-c", str(path), timeout=60)
    assert_one_line(code, err, str(path), fragment)


def test_nesting_up_to_the_cap_is_read():
    depth = MAX_CONFIG_DEPTH
    assert parse_yaml("[" * depth + "]" * depth) is not None


def test_a_config_over_a_megabyte_is_refused_before_it_is_parsed(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text("# " + "x" * (1 << 20) + "\n" + LENET_TRAIN)
    with pytest.raises(ConfigError, match=r"larger than 1024 KiB"):
        load_config(path)


def test_an_error_quotes_a_short_prefix_of_a_long_value(tmp_path):
    path = tmp_path / "long.yaml"
    path.write_text("model: {name: N, input_shape: [1, 28, 28], layers: [FlattenLayer]}\n"
                    f"train: {{epochs: 1, batch_size: 10, optimizer: sgd, lr: '{'x' * 500_000}'}}\n")
    result = CliRunner().invoke(cli, ["describe", "-c", str(path)], prog_name="xpnn")
    line = result.stderr.strip()
    assert result.exit_code == 1 and "\n" not in line, result.stderr[:2000]
    assert "train.lr" in line and "xxxxx" in line and len(line) < 1100, line[:2000]


def test_a_config_that_is_not_utf8_is_one_line_error(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"model: caf\xe9\n")
    with pytest.raises(ConfigError, match=r"not UTF-8 text \(byte 10 is 0xe9\)"):
        read_config(path)


# -- IDX headers ----------------------------------------------------------------------------------

def idx_header(*dims):
    return bytes([0, 0, 8, len(dims)]) + struct.pack(f">{len(dims)}I", *dims)


@pytest.mark.parametrize("data, fragment", [
    (idx_header(65536, 65536, 65536, 65536), "needs 18446744073709551616 payload bytes"),
    (idx_header(0x10000, 0x10000, 0x10000, 0x10000, 0x10000, 0x10000, 0x10000, 0x10000),
     "truncated"),
    (bytes([0, 0, 8, 255]) + bytes(4 * 255), "255 dimensions; xpnn reads IDX files of 1 to 8"),
    (bytes([0, 0, 8, 65]) + bytes(4 * 65 + 10), "65 dimensions"),
])
def test_idx_headers_beyond_the_file_or_numpy_are_one_line_errors(tmp_path, data, fragment):
    for name, content in (("raw-idx", data), ("packed-idx.gz", gzip.compress(data))):
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(DataError, match=fragment):
            read_idx(path)


@pytest.mark.slow
def test_a_small_gzip_claiming_a_huge_array_is_refused_in_little_memory(tiny_run, tmp_path):
    path = tmp_path / "bomb-idx3-ubyte.gz"
    claim = idx_header(200_000, 100, 100)  # 2 GB of pixels claimed, 1.1 GiB given: more than
    compressor = zlib.compressobj(1, zlib.DEFLATED, 31)  # the memory limit, in 5 MB
    zeros = bytes(1 << 20)
    with open(path, "wb") as handle:
        handle.write(compressor.compress(claim))
        for _ in range(1126):
            handle.write(compressor.compress(zeros))
        handle.write(compressor.flush())
    assert path.stat().st_size < 8 << 20
    code, _, err = run_bounded("predict", str(tiny_run), str(path), timeout=120)
    assert_one_line(code, err, str(path), "truncated: the header's shape (200000, 100, 100) "
                                          "needs 2000000000 payload bytes, the file has 1180696576")


def test_a_gzip_idx_longer_than_its_header_is_refused_naming_the_extra(tmp_path):
    path = tmp_path / "long-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(encode_idx(numpy.arange(5, dtype=numpy.uint8)) + bytes(7)))
    with pytest.raises(DataError, match=r"too long: .* needs 5 payload bytes, the file has 12 "
                                        r"\(7 extra\)"):
        read_idx(path)


# -- pictures for predict ---------------------------------------------------------------------------

def png_header_only(width, height):
    """A PNG of a few dozen bytes whose header claims width x height pixels (no pixel data)."""
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("bounded") / "run"
    result = CliRunner().invoke(cli, ["train", "-c", "lenet", "--epochs", "1", "--batch-size", "50",
                                      "--limit-train", "100", "--limit-test", "50",
                                      "--no-progress", "-o", str(run_dir)])
    assert result.exit_code == 0, result.output
    return run_dir


@pytest.mark.parametrize("width, height", [(60000, 60000), (20000, 20000), (6000, 6000)])
def test_a_picture_too_large_is_refused_from_its_header(tiny_run, tmp_path, width, height):
    path = tmp_path / f"huge-{width}.png"
    path.write_bytes(png_header_only(width, height))
    code, _, err = run_bounded("predict", str(tiny_run), str(path), timeout=60)
    assert_one_line(code, err, str(path), f"{width} x {height} pixels is more than the 25 "
                                          f"megapixels")


# -- paths of any bytes -----------------------------------------------------------------------------

def test_export_to_a_path_that_is_not_utf8(tiny_run, tmp_path):
    folder = os.fsencode(tmp_path)
    run_copy = folder + b"/run-\xfe"
    os.mkdir(run_copy)
    for name in os.listdir(os.fsencode(tiny_run)):
        with open(os.path.join(os.fsencode(tiny_run), name), "rb") as source:
            with open(os.path.join(run_copy, name), "wb") as target:
                target.write(source.read())
    target = folder + b"/model-\xff.onnx"
    done = subprocess.run([sys.executable, str(REPO / "run.py"), b"export", run_copy, b"-o", target],
                          cwd=REPO, capture_output=True, timeout=120,
                          env={**os.environ, "PYTHONIOENCODING": "utf-8"})
    assert done.returncode == 0, done.stderr.decode("utf-8", "replace")
    assert target in done.stdout and b"Traceback" not in done.stderr
    import onnx
    model = onnx.load(os.fsdecode(target))
    properties = {prop.key: prop.value for prop in model.metadata_props}
    assert properties["checkpoint"].endswith("run-\\xfe/best.npz")
