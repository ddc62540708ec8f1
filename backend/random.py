"""Host random numbers: the same seed gives the same weights and batch order on every device."""
import numpy


def new_rng(seed=None):
    """Return a host `numpy.random.Generator`; pass an int for reproducible draws."""
    if isinstance(seed, numpy.random.Generator):
        return seed
    return numpy.random.default_rng(seed)
