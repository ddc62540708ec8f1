"""Seeded fuzzing of what xpnn reads from users: configs, IDX files, pictures and checkpoint
archives (their weights and the archive's bytes; the metadata's fields are left whole).

Each case is a file made from a seed and a case number (the same file every run): a valid one
of its kind, then damaged (bytes flipped, cut, repeated; values swapped for hostile ones;
headers that claim too much). Reading it must end in a result or one of xpnn's one-line errors
(ConfigError, DataError, TrainingError), within `CASE_SECONDS`, in a process limited to `MEMORY_LIMIT` of
address space. Run as a worker:

    python tests/fuzzing.py KIND SEED FIRST COUNT FOLDER

which prints one JSON line per case that failed (and `done N` at the end); tests/test_fuzz.py
starts the workers.
"""
import io
import json
import os
import resource
import signal
import struct
import sys
import traceback
import zlib
from pathlib import Path

import numpy

REPO = Path(__file__).resolve().parent.parent
MEMORY_LIMIT = 1 << 30       # bytes of address space for a worker
CASE_SECONDS = 30            # wall-clock limit of one case
KINDS = ("config", "idx", "image", "checkpoint")

HOSTILE_VALUES = [None, True, False, 0, -1, 1, 2, 3, 7, 28, 2**31, -2**31, 2**63, 10**100,
                  0.5, -0.0, 1e308, float("inf"), float("-inf"), float("nan"), "", "x",
                  "0.1", "1e999", "nan", "ReLULayer", "a" * 5000, [], [1, 2], {}, {"a": 1},
                  [[[[[[[[1]]]]]]]], {"name": "cosine"}, "\u202e\u0000", "~"]
YAML_FRAGMENTS = ["&a [1, 2]", "*a", "!!python/object:os.system ls", "!!binary aGVsbG8=",
                  "!!set {a, b}", "2001-12-14t21:59:43.10-05:00", "<<: *a", "? [1, 2]\n: 3",
                  "{", "}", "[", "]", "'unterminated", "\t", "%YAML 1.1\n---", "---\n---",
                  "\xff", "\ufeff", "...", "!!float 'x'", "0x1F", "0o17", "1_000", ".inf",
                  "- - - - - -", "|\n  block", ">-\n  folded", "&anchor", "*missing"]


# -- configs --------------------------------------------------------------------------------------

def config_case(rng, folder):
    base = (REPO / "configs" / str(rng.choice(["lenet.yaml", "resnet.yaml",
                                                "resnet_augment.yaml"]))).read_text()
    strategy = int(rng.integers(6))
    if strategy == 0:  # a value swapped for a hostile one
        import yaml
        config = yaml.safe_load(base)
        for _ in range(int(rng.integers(1, 4))):
            _replace_somewhere(config, rng)
        text = yaml.safe_dump(config, sort_keys=False, allow_unicode=True)
    elif strategy == 1:  # YAML fragments inserted
        lines = base.splitlines()
        for _ in range(int(rng.integers(1, 5))):
            at = int(rng.integers(len(lines) + 1))
            fragment = YAML_FRAGMENTS[int(rng.integers(len(YAML_FRAGMENTS)))]
            lines.insert(at, fragment if rng.random() < 0.5 else "  " * int(rng.integers(4))
                         + f"key{at}: {fragment}")
        text = "\n".join(lines)
    elif strategy == 2:  # an alias chain of random width and length
        width, levels = int(rng.integers(2, 12)), int(rng.integers(2, 12))
        lines = [f"l0: &l0 [{', '.join(['x'] * width)}]"]
        lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, levels)]
        text = "\n".join(lines) + f"\nmodel: *l{levels - 1}\n" + base
    elif strategy == 3:  # deep nesting, flow or block
        depth = int(rng.choice([10, 49, 50, 51, 200, 3000, 20000]))
        if rng.random() < 0.5:
            text = base + "\nextra: " + "[" * depth + "]" * depth + "\n"
        else:
            depth = min(depth, 700)
            text = base + "\n" + "".join(f"{' ' * i}k{i}:\n" for i in range(depth)) + \
                " " * depth + "v\n"
    else:  # bytes flipped, cut, repeated or inserted
        return _write(folder, "config.yaml", _damaged(base.encode(), rng))
    return _write(folder, "config.yaml", text.encode("utf-8", "surrogatepass"))


def _replace_somewhere(config, rng):
    """Replace one value at a random place of `config` (nested dicts and lists)."""
    node = config
    for _ in range(int(rng.integers(1, 6))):
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        if not keys:
            return
        key = keys[int(rng.integers(len(keys)))]
        if not isinstance(node[key], (dict, list)) or rng.random() < 0.3:
            break
        node = node[key]
    else:
        return
    node[key] = HOSTILE_VALUES[int(rng.integers(len(HOSTILE_VALUES)))]


def run_config(path):
    from xpnn.training.config import load_config
    load_config(path)


# -- IDX files ------------------------------------------------------------------------------------

def idx_case(rng, folder):
    from xpnn.data import encode_idx
    ndim = int(rng.integers(1, 5))
    shape = tuple(int(size) for size in rng.integers(0, 6, ndim))
    data = bytearray(encode_idx(rng.integers(0, 256, shape, dtype=numpy.uint8)))
    strategy = int(rng.integers(5))
    if strategy == 0:  # the dimension count changed
        data[3] = int(rng.choice([0, 1, 3, 9, 64, 65, 255]))
    elif strategy == 1:  # a dimension claims a size
        axis = int(rng.integers(ndim))
        value = int(rng.choice([0, 1, 65536, 2**31 - 1, 2**32 - 1, int(rng.integers(2**32))]))
        data[4 + 4 * axis:8 + 4 * axis] = struct.pack(">I", value)
    elif strategy == 2:  # the type code changed
        data[2] = int(rng.integers(256))
    else:
        data = bytearray(_damaged(bytes(data), rng))
    if rng.random() < 0.5:
        packed = bytearray(_gzip(bytes(data)))
        if rng.random() < 0.3:
            packed = bytearray(_damaged(bytes(packed), rng))
        return _write(folder, "case-idx-ubyte.gz", bytes(packed))
    return _write(folder, "case-idx-ubyte", bytes(data))


def run_idx(path):
    from xpnn.data import read_idx
    read_idx(path)


# -- pictures -------------------------------------------------------------------------------------

IMAGE_FORMATS = [("PNG", ".png"), ("JPEG", ".jpg"), ("GIF", ".gif"), ("BMP", ".bmp"),
                 ("TIFF", ".tif"), ("WEBP", ".webp")]
IMAGE_MODES = ["L", "RGB", "RGBA", "LA", "P", "1", "I;16", "I", "F"]


def image_case(rng, folder):
    from PIL import Image
    height, width = (int(size) for size in rng.integers(1, 80, 2))
    mode = IMAGE_MODES[int(rng.integers(len(IMAGE_MODES)))]
    pixels = rng.integers(0, 256, (height, width), dtype=numpy.uint8)
    if rng.random() < 0.5:  # a dark stroke on a light page, as a photo of a digit
        pixels[:] = 230
        pixels[height // 4:max(height // 4 + 1, 3 * height // 4), width // 2] = 20
    image = Image.fromarray(pixels, "L").convert(mode)
    strategy = int(rng.integers(4))
    for _ in range(10):  # a format that takes this mode
        file_format, suffix = IMAGE_FORMATS[int(rng.integers(len(IMAGE_FORMATS)))]
        buffer = io.BytesIO()
        try:
            image.save(buffer, file_format)
            break
        except (OSError, ValueError, KeyError):
            continue
    else:
        file_format, suffix = "PNG", ".png"
        buffer = io.BytesIO()
        image.convert("L").save(buffer, "PNG")
    data = buffer.getvalue()
    if strategy == 0 and file_format == "PNG":  # a header that claims a huge picture
        side = int(rng.choice([5001, 20000, 60000, 2**31 - 1]))
        header = struct.pack(">II", side, side) + data[24:29]
        data = data[:16] + header + struct.pack(">I", zlib.crc32(b"IHDR" + header)) + data[33:]
    elif strategy in (1, 2):
        data = _damaged(data, rng)
    elif strategy == 3 and rng.random() < 0.2:
        data = rng.integers(0, 256, int(rng.integers(0, 200)), dtype=numpy.uint8).tobytes()
    return _write(folder, f"case{suffix}", data)


def run_image(path):
    from xpnn.inference.images import read_images
    read_images([path], (28, 28))


# -- checkpoint archives ----------------------------------------------------------------------------

_BASE_CHECKPOINT = {}


def _base_checkpoint(folder):
    """A lenet checkpoint's bytes (made once per worker)."""
    if "data" not in _BASE_CHECKPOINT:
        from xpnn import nets, optim
        from xpnn.training import load_config
        from xpnn.training.checkpoint import save_checkpoint
        config = load_config("lenet")
        net = nets.build(config["model"], seed=0)
        optimizer = optim.MomentumSGDOptimizer(net.parameters(), lr=0.1, momentum=0.9)
        path = Path(folder) / "base.npz"
        save_checkpoint(path, net, optimizer, {"config": config, "epoch": 1, "step": 0})
        _BASE_CHECKPOINT["data"] = path.read_bytes()
        path.unlink()
    return _BASE_CHECKPOINT["data"]


WEIGHT_CHANGES = ["nan", "inf", "huge", "float64", "int32", "shape", "missing", "extra",
                  "empty", "scalar"]


def checkpoint_case(rng, folder):
    base = _base_checkpoint(folder)
    if rng.random() < 0.4:
        return _write(folder, "case.npz", _damaged(base, rng))
    with numpy.load(io.BytesIO(base), allow_pickle=False) as archive:
        entries = {name: archive[name] for name in archive.files}
    names = sorted(name for name in entries if name.startswith("weights/"))
    for _ in range(int(rng.integers(1, 3))):
        name = names[int(rng.integers(len(names)))]
        change = WEIGHT_CHANGES[int(rng.integers(len(WEIGHT_CHANGES)))]
        if name not in entries:  # taken out by an earlier change
            continue
        weights = entries[name].copy()
        if change in ("nan", "inf") and weights.size and weights.dtype.kind == "f":
            weights.flat[int(rng.integers(weights.size))] = numpy.nan if change == "nan" \
                else -numpy.inf
        elif change == "huge":
            with numpy.errstate(over="ignore"):  # float32 * 1e38: inf, as meant
                weights = weights * float(rng.choice([1e5, 1e7, 3e19, 1e38]))
        elif change in ("float64", "int32"):
            with numpy.errstate(invalid="ignore"):  # NaN put in by an earlier change
                weights = weights.astype(change)
        elif change == "shape":
            weights = weights.reshape(-1)[:max(0, weights.size - 1)]
        elif change == "missing":
            del entries[name]
            continue
        elif change == "extra":
            entries[name + "_extra"] = weights
        elif change == "empty":
            weights = numpy.zeros((0,), weights.dtype)
        else:
            weights = numpy.float32(1.5)
        entries[name] = weights
    buffer = io.BytesIO()
    numpy.savez(buffer, **entries)
    return _write(folder, "case.npz", buffer.getvalue())


def run_checkpoint(path):
    from xpnn.training.runs import load_trained
    load_trained(path)


# -- shared ---------------------------------------------------------------------------------------

def _damaged(data, rng):
    """`data` with a few random byte-level changes."""
    data = bytearray(data)
    for _ in range(int(rng.integers(1, 6))):
        kind = int(rng.integers(5))
        at = int(rng.integers(len(data) + 1))
        if kind == 0 and data:  # flip bits
            at = min(at, len(data) - 1)
            data[at] ^= int(rng.integers(1, 256))
        elif kind == 1:  # cut
            data = data[:at]
        elif kind == 2:  # repeat a piece
            piece = data[at:at + int(rng.integers(1, 64))]
            data[at:at] = piece * int(rng.integers(1, 20))
        elif kind == 3:  # insert random bytes
            data[at:at] = rng.integers(0, 256, int(rng.integers(1, 16)), dtype=numpy.uint8).tobytes()
        else:  # overwrite with a boundary value
            value = bytes([int(rng.choice([0, 0x7F, 0x80, 0xFF]))]) * 4
            data[at:at + 4] = value
    return bytes(data)


def _gzip(data):
    compressor = zlib.compressobj(6, zlib.DEFLATED, 31)
    return compressor.compress(data) + compressor.flush()


def _write(folder, name, data):
    path = Path(folder) / name
    path.write_bytes(data)
    return path


MAKERS = {"config": config_case, "idx": idx_case, "image": image_case,
          "checkpoint": checkpoint_case}
RUNNERS = {"config": run_config, "idx": run_idx, "image": run_image,
           "checkpoint": run_checkpoint}


class CaseTimeout(BaseException):
    """A case ran past `CASE_SECONDS`."""


def _on_alarm(number, frame):
    raise CaseTimeout


def run_cases(kind, seed, first, count, folder):
    """Run cases first .. first + count - 1 of `kind`; yield a record for each that failed."""
    from xpnn.data import DataError
    from xpnn.nets import ConfigError
    from xpnn.training.errors import TrainingError
    signal.signal(signal.SIGALRM, _on_alarm)
    kind_number = KINDS.index(kind)
    for case in range(first, first + count):
        rng = numpy.random.default_rng([seed, kind_number, case])
        case_folder = Path(folder) / f"{kind}-{case}"
        case_folder.mkdir(parents=True, exist_ok=True)
        path = MAKERS[kind](rng, case_folder)
        problem = None
        signal.alarm(CASE_SECONDS)
        try:
            RUNNERS[kind](path)
        except (ConfigError, DataError, TrainingError) as error:
            message = str(error)
            if not message.strip():
                problem = f"an empty {type(error).__name__} message"
        except CaseTimeout:
            problem = f"no answer within {CASE_SECONDS} s"
        except BaseException:  # noqa: BLE001 - anything else is what this looks for
            problem = traceback.format_exc(limit=-8)
        finally:
            signal.alarm(0)
        if problem is None:
            for stale in case_folder.iterdir():
                stale.unlink()
            case_folder.rmdir()
        else:
            yield {"kind": kind, "seed": seed, "case": case, "file": str(path),
                   "problem": problem}


def main(argv):
    kind, seed, first, count, folder = argv[1], int(argv[2]), int(argv[3]), int(argv[4]), argv[5]
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    failures = 0
    for record in run_cases(kind, seed, first, count, folder):
        failures += 1
        print(json.dumps(record), flush=True)
    print(f"done {count} {failures}", flush=True)


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    main(sys.argv)
