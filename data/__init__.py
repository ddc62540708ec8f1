"""Datasets for xpnn: an IDX file reader and checked loaders for MNIST and Fashion-MNIST.

    from xpnn.data import load_dataset
    ds = load_dataset("mnist")            # ds.train_images: (60000, 1, 28, 28) uint8, read-only
    ds = load_dataset("fashion-mnist")    # needs `apt-get install dataset-fashion-mnist` or data_dir=
    ds = load_dataset(None, data_dir=d)   # any folder of the four IDX files, no checksums
    split = hold_out(ds, 5000)            # the last 5,000 training images as a validation set

Every problem raises `DataError` (a ValueError) naming the file, what was wrong and what would be right.
`download(name, dest_dir)` fetches the files from a mirror; nothing here calls it for you.
"""
if __name__ != "xpnn.data":  # `import data` finds this only from a checkout's root
    raise ImportError(f"{__name__} is part of the package xpnn: import xpnn.data")
from xpnn.data.errors import DataError
from xpnn.data.idx import encode_idx, parse_idx, read_idx, read_idx_bytes
from xpnn.data.datasets import (DATASETS, FILE_STEMS, Dataset, DatasetSpec, dataset_names, dataset_spec,
                       find_dataset_files, load_dataset, sha256_of_idx)
from xpnn.data.download import download
from xpnn.data.split import DEFAULT_VALIDATION, Split, hold_out

__all__ = ["DataError", "read_idx", "read_idx_bytes", "parse_idx", "encode_idx", "Dataset", "DatasetSpec",
           "DATASETS", "FILE_STEMS", "dataset_names", "dataset_spec", "find_dataset_files", "load_dataset",
           "sha256_of_idx", "download", "DEFAULT_VALIDATION", "Split", "hold_out"]
