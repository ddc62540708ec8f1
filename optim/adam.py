"""Adam and AdamW on packed parameters, computed as PyTorch's torch.optim.Adam and AdamW are."""
import math

from xpnn.backend import get_array_module
from xpnn.backend.updates import adam_update
from xpnn.optim.sgd import SGDOptimizer

DEFAULT_BETAS = (0.9, 0.999)
DEFAULT_EPS = 1e-8


class AdamOptimizer(SGDOptimizer):
    """Adam, its weight decay added to the gradient (L2), as torch.optim.Adam computes it::

        g <- grad + weight_decay * w;  m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2
        w <- w - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)

    where t counts the steps. State: `exp_avg` (m), `exp_avg_sq` (v) and `steps`. The step's
    scalars are rounded to the parameters' dtype; after `keep_lr_on_device()` they are computed
    on the device (whose pow may differ in the last bit), so `update()` can be replayed.
    """

    decoupled = False  # AdamW: the decay shrinks the weights instead of joining the gradient
    state_arrays = ("exp_avg", "exp_avg_sq")

    def __init__(self, parameters, lr, betas=DEFAULT_BETAS, eps=DEFAULT_EPS, weight_decay=0.0):
        super().__init__(parameters, lr, weight_decay)
        betas = tuple(betas)
        if len(betas) != 2 or not all(isinstance(b, (int, float)) and 0 <= b < 1 for b in betas):
            raise ValueError(f"betas must be two numbers in [0, 1), like {DEFAULT_BETAS}, "
                             f"got {betas!r}")
        if not (math.isfinite(eps) and eps > 0):
            raise ValueError(f"eps must be a finite number > 0, got {eps!r}")
        self.betas = tuple(float(b) for b in betas)
        self.eps = float(eps)
        self.steps_on_device = None

    def keep_lr_on_device(self):
        super().keep_lr_on_device()
        self.steps_on_device = get_array_module(self.data).full((), self.steps, dtype="float64")

    def update(self):
        self.follow_parameters()
        step_size, bias2_sqrt, shrink = (self._device_scalars() if self.lr_on_device is not None
                                         else self._host_scalars())
        beta1, beta2 = self.betas
        adam_update(self.data, self.grad, self.exp_avg, self.exp_avg_sq, step_size, bias2_sqrt,
                    beta1, beta2, self.eps, 0.0 if self.decoupled else self.weight_decay, shrink)

    def _host_scalars(self):
        """(lr / (1 - b1^t), sqrt(1 - b2^t), 1 - lr * weight_decay or None) for the coming
        step, each rounded to the parameters' dtype."""
        real = self.data.dtype.type
        t = self.steps + 1
        lr = real(self._lr)
        step_size = lr / real(1 - self.betas[0] ** t)
        bias2_sqrt = real(math.sqrt(1 - self.betas[1] ** t))
        shrink = float(real(1) - lr * real(self.weight_decay)) if self.decoupled else None
        return float(step_size), float(bias2_sqrt), shrink

    def _device_scalars(self):
        """`_host_scalars` as 0-d arrays computed on the device (so a captured step replays)."""
        xp, real = get_array_module(self.data), self.data.dtype
        self.steps_on_device += 1
        bias1 = (1 - xp.power(self.betas[0], self.steps_on_device)).astype(real)
        bias2_sqrt = xp.sqrt(1 - xp.power(self.betas[1], self.steps_on_device)).astype(real)
        lr = self.lr_on_device
        shrink = (1 - lr * real.type(self.weight_decay)) if self.decoupled else None
        return lr / bias1, bias2_sqrt, shrink

    def load_state_dict(self, state):
        super().load_state_dict(state)
        if self.steps_on_device is not None:
            self.steps_on_device.fill(self.steps)


class AdamWOptimizer(AdamOptimizer):
    """AdamW: Adam whose weight decay shrinks the weights, w <- w (1 - lr * weight_decay),
    before the Adam step on the plain gradient, as torch.optim.AdamW computes it (the same
    default weight decay, 0.01)."""

    decoupled = True

    def __init__(self, parameters, lr, betas=DEFAULT_BETAS, eps=DEFAULT_EPS, weight_decay=0.01):
        super().__init__(parameters, lr, betas, eps, weight_decay)
