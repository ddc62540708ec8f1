"""Pack many parameters into one buffer so an optimizer step is a few whole-array operations."""
from xpnn.backend import get_array_module


class PackedParameters:
    """The parameters' data and gradients as views of two flat buffers, `data` and `grad`;
    `refresh()` packs them afresh where they were moved, cast or rebound since (``net.to``)."""

    def __init__(self, parameters):
        self.parameters = list(parameters)
        if not self.parameters:
            raise ValueError("the optimizer was given no parameters")
        self.data, self.grad = self._pack()

    def refresh(self):
        """Repack if any parameter no longer holds the views handed to it; True if it did."""
        if all(param.data is data and param.grad is grad
               for param, (data, grad) in zip(self.parameters, self._views)):
            return False
        self.data, self.grad = self._pack()
        return True

    def _pack(self):
        first = self.parameters[0].data
        xp = get_array_module(first)
        for param in self.parameters:
            if param.dtype != first.dtype or get_array_module(param.data) is not xp:
                raise TypeError(
                    f"all parameters must share one device and dtype to be optimized together; "
                    f"found {first.dtype} and {param.dtype} (move the whole network with "
                    f"net.to(...))")
        total = sum(param.size for param in self.parameters)
        data = xp.empty(total, dtype=first.dtype)
        grad = xp.empty(total, dtype=first.dtype)
        start = 0
        for param in self.parameters:
            stop = start + param.size
            data[start:stop] = param.data.ravel()
            grad[start:stop] = param.grad.ravel()
            param.data = data[start:stop].reshape(param.shape)
            param.grad = grad[start:stop].reshape(param.shape)
            start = stop
        self._views = [(param.data, param.grad) for param in self.parameters]
        return data, grad
