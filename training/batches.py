"""Batches: the seeded order of each epoch and the uint8 -> float32 conversion, on the device."""
import numpy

from xpnn.backend import get_array_module


def epoch_permutation(seed, epoch, count):
    """The order of the `count` training images in `epoch` (0-based), as int64 host indices;
    it depends only on (seed, epoch), so a resumed run needs no random-generator state."""
    return numpy.random.default_rng([seed, epoch]).permutation(count).astype(numpy.int64)


def to_float(images):
    """uint8 images (N, C, H, W) -> float32 in [0, 1], on the images' device."""
    xp = get_array_module(images)
    return xp.true_divide(images, 255, dtype=xp.float32)  # one pass, same bits as cast-then-divide


def num_batches(count, batch_size):
    """Batches per epoch; the last one may be smaller."""
    return -(-count // batch_size)


def batch_sizes(count, batch_size):
    """The size of each of an epoch's batches, in order."""
    return [min(batch_size, count - start) for start in range(0, count, batch_size)]
