"""The memory layout of images between layers, behind their N x C x H x W face.

    y = channels_first(y_nhwc)     # what a conv or pool layer returns: (N, C, H, W)
    x_nhwc = channels_last(x)      # what it computes on: (N, H, W, C), free for its own output
    with using_layout("nchw"): ...

Convolution and pooling compute on (N, H, W, C) memory (`backend.conv`). What they hand on
depends on the layout (`LAYOUTS`):

* ``channels_last`` (the default): a transposed *view* of their (N, H, W, C) output, so the
  next conv's `channels_last` is free. Element-wise layers write into ``xp.empty_like(x)``,
  which keeps its input's layout on NumPy and CuPy alike, so the whole stack stays
  channels-last. (CuPy's element-wise functions without ``out=`` return C-contiguous, i.e.
  NCHW, arrays: before the layers gave them ``out=``, a GPU stack was channels-last only from a
  conv to the next element-wise layer.)
* ``nchw``: a C-contiguous (N, C, H, W) copy, one more kernel per conv and pool, after which
  element-wise kernels run on plain contiguous arrays and the next conv's patch copy reads
  strided memory.

Measured on the CPU: channels-last (DESIGN.md). On a GPU the choice is unmeasured;
scripts/gpu_check.sh times both (`benchmarks/gpu_vs_torch.py --layouts`).
"""
from xpnn.backend.device import get_array_module
from xpnn.backend.dispatch import Switch

LAYOUTS = ("channels_last", "nchw")
LAYOUT = Switch("layout", LAYOUTS, default="channels_last")


def using_layout(name):
    """Within this block, conv and pool layers hand on images in layout `name`."""
    return LAYOUT.using(name)


def chosen_layout():
    return LAYOUT.chosen()


def channels_last(x):
    """View an (N, C, H, W) array as (N, H, W, C): free when its memory is channels-last."""
    return x.transpose(0, 2, 3, 1)


def channels_first(y):
    """(N, C, H, W) of an (N, H, W, C) array: a view (``channels_last``) or a contiguous copy
    (``nchw``)."""
    view = y.transpose(0, 3, 1, 2)
    if LAYOUT.chosen() == "nchw":
        return get_array_module(y).ascontiguousarray(view)
    return view
