"""The memory layout of images between layers: channels-last memory behind an N x C x H x W face.
Conv and pooling hand on a transposed *view* of their (N, H, W, C) output; element-wise layers
write into ``xp.empty_like(x)``, which keeps that layout."""


def channels_last(x):
    """View an (N, C, H, W) array as (N, H, W, C): free when its memory is channels-last."""
    return x.transpose(0, 2, 3, 1)


def channels_first(y):
    """The (N, C, H, W) view of an (N, H, W, C) array."""
    return y.transpose(0, 3, 1, 2)
