"""The memory layout of images between layers: channels-last memory behind an N x C x H x W face.

Convolution and pooling compute on (N, H, W, C) memory and hand on a transposed *view* of their
output, so the next conv's `channels_last` is free. Element-wise layers write into
``xp.empty_like(x)``, which keeps its input's layout, so the whole stack stays channels-last.
"""


def channels_last(x):
    """View an (N, C, H, W) array as (N, H, W, C): free when its memory is channels-last."""
    return x.transpose(0, 2, 3, 1)


def channels_first(y):
    """The (N, C, H, W) view of an (N, H, W, C) array."""
    return y.transpose(0, 3, 1, 2)
