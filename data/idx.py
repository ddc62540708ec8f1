"""Reading IDX files (the MNIST file format), raw or gzip-compressed, into NumPy uint8 arrays.

An IDX file is a header followed by the payload, all big-endian:
    bytes 0-1   0x00 0x00
    byte  2     type code (0x08 = unsigned byte; the only type these datasets use)
    byte  3     ndim, the number of dimensions
    then ndim   4-byte unsigned sizes, then prod(sizes) elements in C order.
"""
import gzip
import zlib
from pathlib import Path

import numpy as np

from xpnn.data.errors import DataError

GZIP_MAGIC = b"\x1f\x8b"
UNSIGNED_BYTE = 0x08
TYPE_NAMES = {0x08: "unsigned byte", 0x09: "signed byte", 0x0B: "int16", 0x0C: "int32",
              0x0D: "float32", 0x0E: "float64"}


def read_idx_bytes(path):
    """The decompressed bytes of the IDX file at `path` (gunzipped if it is a gzip stream).

    A name ending in `.gz` must hold a gzip stream; any other name is read as is unless its bytes
    start with the gzip magic number. Raises `DataError` if the file cannot be read or its gzip
    stream is corrupt or truncated.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except OSError as error:
        raise DataError(f"{path}: cannot read the file ({error.strerror or error})") from None
    is_gzip = data[:2] == GZIP_MAGIC
    if path.suffix == ".gz" and not is_gzip:
        raise DataError(f"{path}: named .gz but is not a gzip stream (starts with {data[:4].hex(' ')}, "
                        f"a gzip stream starts with 1f 8b); the file is corrupt or misnamed")
    if not is_gzip:
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as error:
        raise DataError(f"{path}: corrupt gzip stream ({error}); the compressed file is damaged or "
                        f"truncated: restore or re-download it") from None


def parse_idx(data, source="<bytes>"):
    """The uint8 array held by the IDX bytes `data`, of the shape the header states (read-only view).

    `source` names the file in error messages. Raises `DataError` for a wrong magic number, an
    unsupported element type, a short header, or a payload whose size differs from the header's.
    """
    if len(data) < 4:
        raise DataError(f"{source}: {len(data)} bytes is too short for an IDX header (at least 4 bytes: "
                        f"00 00 <type> <ndim>)")
    zero0, zero1, type_code, ndim = data[:4]
    if zero0 != 0 or zero1 != 0:
        raise DataError(f"{source}: wrong magic number {bytes(data[:4]).hex(' ')}; an IDX file starts "
                        f"with 00 00 <type code> <ndim> (e.g. 00 00 08 03 for uint8 images)")
    if type_code != UNSIGNED_BYTE:
        kind = TYPE_NAMES.get(type_code, "unknown type")
        raise DataError(f"{source}: IDX type code 0x{type_code:02X} ({kind}) is not supported; "
                        f"only 0x08 (unsigned byte) is")
    if ndim == 0:
        raise DataError(f"{source}: IDX header says 0 dimensions; expected at least 1")
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise DataError(f"{source}: truncated header: {ndim} dimensions need {header_size} header bytes, "
                        f"the file has {len(data)}")
    shape = tuple(int(size) for size in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(shape, dtype=np.int64))
    payload = len(data) - header_size
    if payload != expected:
        problem = "truncated" if payload < expected else "too long"
        raise DataError(f"{source}: {problem}: the header's shape {shape} needs {expected} payload bytes, "
                        f"the file has {payload} ({abs(payload - expected)} "
                        f"{'missing' if payload < expected else 'extra'})")
    return np.frombuffer(data, dtype=np.uint8, count=expected, offset=header_size).reshape(shape)


def read_idx(path):
    """The uint8 array stored in the IDX file at `path` (raw or .gz), shaped as its header says.

    The array is a read-only view of the file's bytes. Raises `DataError` for any problem with the
    file, naming it, what was wrong and what was expected.
    """
    return parse_idx(read_idx_bytes(path), str(path))


def encode_idx(array):
    """The IDX bytes (uncompressed) of a uint8 array: header then C-order payload."""
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise DataError(f"encode_idx needs a uint8 array, got dtype {array.dtype}")
    if not 1 <= array.ndim <= 255:
        raise DataError(f"encode_idx needs 1 to 255 dimensions, got {array.ndim}")
    header = bytes([0, 0, UNSIGNED_BYTE, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    return header + np.ascontiguousarray(array).tobytes()
