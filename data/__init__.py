"""Datasets for xpnn: an IDX file reader, checked loaders for MNIST and Fashion-MNIST
(`load_dataset`), the validation split (`hold_out`) and `download`. Every problem raises
`DataError` (a ValueError) naming the file, what was wrong and what would be right."""
if __name__ != "xpnn.data":  # `import data` finds this only from a checkout's root
    raise ImportError(f"{__name__} is part of the package xpnn: import xpnn.data")
from xpnn.data.idx import DataError, encode_idx, parse_idx, read_idx, read_idx_bytes
from xpnn.data.datasets import (DATASETS, DEFAULT_VALIDATION, FILE_STEMS, Dataset, DatasetSpec,
                                Split, dataset_spec, download, hold_out, load_dataset,
                                sha256_of_idx)

__all__ = ["DataError", "read_idx", "read_idx_bytes", "parse_idx", "encode_idx", "Dataset",
           "DatasetSpec", "DATASETS", "FILE_STEMS", "dataset_spec", "load_dataset",
           "sha256_of_idx", "download", "DEFAULT_VALIDATION", "Split", "hold_out"]
