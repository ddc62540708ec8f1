"""The validation split: the last images of the training set, held out to choose the model.
It depends only on the count, so every run with the same count holds out the same images."""
from dataclasses import dataclass

import numpy as np

from xpnn.data.idx import DataError

DEFAULT_VALIDATION = 5000


@dataclass(frozen=True, eq=False)
class Split:
    """Training images and labels with a validation set held out (views of a `Dataset`'s arrays;
    the validation arrays are empty when nothing is held out): images (N, 1, H, W), labels (N,)."""
    train_images: np.ndarray
    train_labels: np.ndarray
    validation_images: np.ndarray
    validation_labels: np.ndarray


def hold_out(dataset, count):
    """Split `dataset`'s training set into (all but the last `count`, the last `count`);
    `DataError` unless 0 <= count < the number of training images."""
    total = len(dataset.train_labels)
    if not 0 <= count < total:
        raise DataError(f"data.validation {count:,} leaves no training images: {dataset.name!r} "
                        f"has {total:,}; hold out between 0 and {total - 1:,} of them")
    keep = total - count
    return Split(dataset.train_images[:keep], dataset.train_labels[:keep],
                 dataset.train_images[keep:], dataset.train_labels[keep:])
