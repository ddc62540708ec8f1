"""Reading IDX files (the MNIST file format), raw or gzip-compressed, into NumPy uint8 arrays.

An IDX file is big-endian: bytes 00 00, a type code (08 = unsigned byte, the only one these
datasets use), ndim, then ndim 4-byte sizes, then prod(sizes) elements in C order.
"""
import gzip
import math
import os
import zlib
from pathlib import Path

import numpy as np

GZIP_MAGIC = b"\x1f\x8b"
UNSIGNED_BYTE = 0x08
TYPE_NAMES = {0x08: "unsigned byte", 0x09: "signed byte", 0x0B: "int16", 0x0C: "int32",
              0x0D: "float32", 0x0E: "float64"}
MAX_DIMENSIONS = 8             # IDX datasets use 1 (labels) to 4; NumPy allows no more than 64
CHUNK_BYTES = 16 * 1024 * 1024  # read at a time from a gzip stream
MAX_EXTRA_COUNTED = 64 * 1024 * 1024  # bytes past the payload counted for a "too long" message


class DataError(ValueError):
    """A dataset file is missing, corrupt or malformed; the message names the file, what was wrong and what
    would be right."""


def read_idx_bytes(path):
    """The decompressed bytes of the IDX file at `path` (gunzipped if it starts with the gzip
    magic number, which a `.gz` name needs). `DataError` if the file cannot be read, its gzip
    stream is corrupt, its header is malformed or its size differs from the header's."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            start = handle.read(4)
            is_gzip = start[:2] == GZIP_MAGIC
            if path.suffix == ".gz" and not is_gzip:
                raise DataError(f"{path}: named .gz but is not a gzip stream (starts with "
                                f"{start.hex(' ')}, a gzip stream starts with 1f 8b); the file is "
                                f"corrupt or misnamed")
            if not is_gzip:
                handle.seek(0)
                return _read_checked(handle, path, os.fstat(handle.fileno()).st_size)
            stated = _gzip_size(handle)
            try:
                with gzip.GzipFile(fileobj=handle) as stream:
                    return _read_checked(stream, path, stated, gzip_stated=True)
            except (OSError, EOFError, zlib.error) as error:
                raise DataError(f"{path}: corrupt gzip stream ({error}); the compressed file is "
                                f"damaged or truncated: restore or re-download it") from None
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder, not an IDX file") from None
    except OSError as error:
        raise DataError(f"{path}: cannot read the file ({error.strerror or error})") from None


def _gzip_size(handle):
    """The size a gzip stream states of its last member (modulo 2**32), or None if the file is
    too short to be one. Leaves `handle` at its start."""
    size = None
    if handle.seek(0, os.SEEK_END) >= 18:
        handle.seek(-4, os.SEEK_END)
        size = int.from_bytes(handle.read(4), "little")
    handle.seek(0)
    return size


def _read_checked(stream, path, size, gzip_stated=False):
    """The bytes of an IDX file from `stream`: the header, then the payload it announces, whose
    size is first checked against `size`, the file's (with `gzip_stated`: what a gzip stream
    states, if anything; where that disagrees, the rest is inflated to count the true size)."""
    source = str(path)
    data = b"".join(_pieces(stream, 4))
    data += b"".join(_pieces(stream, 4 * _ndim(data, source)))
    header_size, shape, expected = _header(data, source)
    if not gzip_stated:
        _check_payload(source, shape, expected, size - header_size)
    elif size is not None and (header_size + expected) % 2**32 != size:
        _check_payload(source, shape, expected, _count(stream))
        stream.seek(header_size)  # several members: the size stated was the last one's
    data += b"".join(_pieces(stream, expected))
    _check_payload(source, shape, expected, len(data) - header_size)
    extra = _count(stream, MAX_EXTRA_COUNTED)
    if extra > MAX_EXTRA_COUNTED:
        raise DataError(f"{path}: too long: the header's shape {shape} needs {expected} payload "
                        f"bytes, the file has more than {expected + MAX_EXTRA_COUNTED}")
    return data + bytes(extra)  # zeros stand for the extra bytes, counted in the message


def _pieces(stream, count=math.inf):
    """The next `count` bytes of `stream` (fewer at its end), in pieces of `CHUNK_BYTES` at most,
    so that a count the data do not back costs no memory."""
    while count > 0:
        piece = stream.read(min(count, CHUNK_BYTES))
        if not piece:
            return
        count -= len(piece)
        yield piece


def _count(stream, limit=math.inf):
    """The number of bytes left in `stream` (read and dropped), counted up to `limit` + 1."""
    return sum(map(len, _pieces(stream, limit + 1)))


def _check_payload(source, shape, expected, payload):
    if payload != expected:
        problem = "truncated" if payload < expected else "too long"
        raise DataError(f"{source}: {problem}: the header's shape {shape} needs {expected} payload "
                        f"bytes, the file has {payload} ({abs(payload - expected)} "
                        f"{'missing' if payload < expected else 'extra'})")


def _ndim(data, source):
    """The number of dimensions the first 4 bytes of an IDX file state; `DataError` if they are
    short, or state another magic number or type, or 0 or over `MAX_DIMENSIONS` dimensions."""
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
    if ndim > MAX_DIMENSIONS:
        raise DataError(f"{source}: IDX header says {ndim} dimensions; xpnn reads IDX files of 1 "
                        f"to {MAX_DIMENSIONS} (images are 3: count, rows, columns)")
    return ndim


def _header(data, source):
    """(header size, shape, element count) of the IDX header `data` starts with, counted exactly;
    `DataError` for what `_ndim` refuses or a short header."""
    ndim = _ndim(data, source)
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise DataError(f"{source}: truncated header: {ndim} dimensions need {header_size} header bytes, "
                        f"the file has {len(data)}")
    shape = tuple(int(size) for size in np.frombuffer(data, ">u4", ndim, offset=4))
    return header_size, shape, math.prod(shape)


def parse_idx(data, source="<bytes>"):
    """The uint8 array (a read-only view) of the IDX bytes `data`, shaped as its header says;
    `source` names the file in messages. `DataError` for a malformed header or a payload of
    another size than the header's."""
    header_size, shape, expected = _header(data, source)
    _check_payload(source, shape, expected, len(data) - header_size)
    return np.frombuffer(data, dtype=np.uint8, count=expected, offset=header_size).reshape(shape)


def read_idx(path):
    """`parse_idx` of the IDX file at `path` (raw or .gz); `DataError` for any problem with it."""
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
