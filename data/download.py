"""Optional: fetch a known dataset's four IDX files from a mirror. Never called implicitly."""
import gzip
import hashlib
import os
import urllib.request
import zlib
from pathlib import Path

from xpnn.data.datasets import FILE_STEMS, dataset_spec
from xpnn.data.idx import DataError


def download(name, dest_dir, mirrors=None, timeout=60.0):
    """Download the four `.gz` IDX files of dataset `name` into `dest_dir` and return that folder's Path.
    Each file is checked against its sha256, then written atomically; files already there that pass are
    kept. `mirrors` (base URLs, file:// too; default: the dataset's) are tried in order; `DataError` if
    every one fails."""
    spec = dataset_spec(name)
    mirrors = tuple(mirrors) if mirrors is not None else spec.mirrors
    if not mirrors:
        raise DataError(f"download({spec.name!r}): no mirror known; copy the files by hand into {dest_dir}")
    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    for stem in FILE_STEMS.values():
        target = dest / f"{stem}.gz"
        expected = spec.sha256[stem]
        if target.is_file() and _decompressed_sha256(target.read_bytes()) == expected:
            continue
        failures = []
        for mirror in mirrors:
            url = f"{mirror.rstrip('/')}/{stem}.gz"
            try:
                with urllib.request.urlopen(url, timeout=timeout) as response:
                    payload = response.read()
            except (OSError, ValueError) as error:
                failures.append(f"{url}: {error}")
                continue
            got = _decompressed_sha256(payload)
            if got != expected:
                failures.append(f"{url}: sha256 of the decompressed bytes is {got or 'n/a (not gzip)'}, "
                                f"expected {expected}")
                continue
            partial = target.with_name(target.name + ".part")
            partial.write_bytes(payload)
            os.replace(partial, target)
            break
        else:
            raise DataError(f"download({spec.name!r}): could not fetch {stem}.gz from any mirror:\n  "
                            + "\n  ".join(failures)
                            + f"\nfetch it by hand into {dest}, or pass mirrors=[...]")
    return dest


def _decompressed_sha256(payload):
    """sha256 hex digest of the gunzipped `payload`, or '' if it is not a valid gzip stream."""
    try:
        return hashlib.sha256(gzip.decompress(payload)).hexdigest()
    except (OSError, EOFError, zlib.error):
        return ""
