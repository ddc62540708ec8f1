"""Pack many parameters into one buffer so an optimizer step is a few whole-array operations."""
from xpnn.backend import get_array_module


def pack_parameters(parameters):
    """Move every parameter's data and grad into two flat buffers; rebind them as views.

    All parameters must share one device and dtype. Returns ``(data, grad)``, each a 1-D array
    of the total size; writing into a view writes into the buffer and the other way round.
    """
    parameters = list(parameters)
    if not parameters:
        raise ValueError("the optimizer was given no parameters")
    first = parameters[0].data
    xp = get_array_module(first)
    for param in parameters:
        if param.dtype != first.dtype or get_array_module(param.data) is not xp:
            raise TypeError(
                f"all parameters must share one device and dtype to be optimized together; "
                f"found {first.dtype} and {param.dtype} (call net.to(...) before making the optimizer)"
            )
    total = sum(param.size for param in parameters)
    data = xp.empty(total, dtype=first.dtype)
    grad = xp.zeros(total, dtype=first.dtype)
    start = 0
    for param in parameters:
        stop = start + param.size
        data[start:stop] = param.data.ravel()
        param.data = data[start:stop].reshape(param.shape)
        param.grad = grad[start:stop].reshape(param.shape)
        start = stop
    return data, grad
