"""Stochastic gradient descent, plain and with momentum, on packed parameters."""
import math

from xpnn.backend import CPU, device_of, get_array_module
from xpnn.backend.updates import momentum_update, sgd_update
from xpnn.optim.packing import PackedParameters

DEFAULT_MOMENTUM = 0.9


class SGDOptimizer:
    """w <- w - lr * (grad + weight_decay * w), on parameters packed into one buffer that
    follows them if the network is moved or cast. `step()` is `update()` (device work only, what
    a CUDA graph captures after `keep_lr_on_device()`) and the host's step count."""

    state_arrays = ()  # the names of a subclass's state: flat arrays like `data`, zeros at first

    def __init__(self, parameters, lr, weight_decay=0.0):
        if not (math.isfinite(lr) and lr > 0):
            raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
        if not (math.isfinite(weight_decay) and weight_decay >= 0):
            raise ValueError(f"weight_decay must be a finite number >= 0, got {weight_decay!r}")
        self.lr_on_device = None
        self.lr = float(lr)
        self.weight_decay = float(weight_decay)
        self.packed = PackedParameters(parameters)
        self.steps = 0
        for name in self.state_arrays:
            setattr(self, name, get_array_module(self.data).zeros_like(self.data))

    @property
    def lr(self):
        return self._lr

    @lr.setter
    def lr(self, value):
        self._lr = float(value)
        if self.lr_on_device is not None:
            self.lr_on_device.fill(self._lr)

    # All parameters' values and gradients, each one flat array (their `data` and `grad` are views).
    data = property(lambda self: self.packed.data)
    grad = property(lambda self: self.packed.grad)

    def keep_lr_on_device(self):
        """From now on `update()` reads the learning rate from `lr_on_device`, a 0-d array of
        the parameters' dtype on their device, which setting `lr` writes."""
        self.follow_parameters()
        self.lr_on_device = get_array_module(self.data).full((), self._lr, dtype=self.data.dtype)

    def _rate(self):
        return self._lr if self.lr_on_device is None else self.lr_on_device

    def follow_parameters(self):
        """Repack where the parameters were moved, cast or rebound since the last step, and move
        the optimizer's state (a device rate, `state_arrays`) to where they now are."""
        if not self.packed.refresh():
            return
        if self.lr_on_device is not None:
            self.keep_lr_on_device()
        for name in self.state_arrays:
            moved = device_of(self.data).send(getattr(self, name))
            setattr(self, name, moved.astype(self.data.dtype, copy=False))

    def zero_grad(self):
        self.follow_parameters()
        self.grad.fill(0)

    def step(self):
        self.update()
        self.steps += 1

    def update(self):
        """The step's device work: the parameters moved along their gradients."""
        self.follow_parameters()
        sgd_update(self.data, self.grad, self._rate(), self.weight_decay)

    def state_dict(self):
        """Host arrays and numbers that, loaded back, continue the same trajectory."""
        return {"lr": self.lr, "steps": self.steps,
                **{name: CPU.to_numpy(getattr(self, name)).copy() for name in self.state_arrays}}

    def load_state_dict(self, state):
        """Load a `state_dict`; `ValueError` where a state array is missing or of another shape."""
        for name in self.state_arrays:
            if name not in state:
                raise ValueError(f"optimizer state lacks {name} (it was saved by another "
                                 f"optimizer than {type(self).__name__})")
            if state[name].shape != self.data.shape:
                raise ValueError(f"optimizer state has {name} of shape {state[name].shape}, "
                                 f"expected {self.data.shape}")
        self.lr = float(state["lr"])
        self.steps = int(state["steps"])
        for name in self.state_arrays:
            target = getattr(self, name)
            target[...] = device_of(target).send(state[name])


class MomentumSGDOptimizer(SGDOptimizer):
    """v <- momentum * v + (grad + weight_decay * w);  w <- w - lr * v."""

    state_arrays = ("velocity",)

    def __init__(self, parameters, lr, momentum=DEFAULT_MOMENTUM, weight_decay=0.0):
        super().__init__(parameters, lr, weight_decay)
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
        self.momentum = float(momentum)

    def update(self):
        self.follow_parameters()
        momentum_update(self.data, self.grad, self.velocity, self._rate(), self.momentum,
                        self.weight_decay)
