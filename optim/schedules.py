"""Learning-rate schedules: the rate as a function of training progress in epochs."""
import math


def constant(base_lr, epoch, total_epochs):
    return base_lr


def step(base_lr, epoch, total_epochs, step_size=1, gamma=0.1):
    """Multiply by `gamma` every `step_size` whole epochs."""
    return base_lr * gamma ** int(epoch // step_size)


def cosine(base_lr, epoch, total_epochs, warmup_epochs=0.0, final_lr=0.0):
    """Linear warm-up for `warmup_epochs`, then a half cosine from base_lr down to final_lr."""
    if epoch < warmup_epochs:
        return base_lr * min(1.0, (epoch + 1e-3) / warmup_epochs)
    progress = min(1.0, (epoch - warmup_epochs) / max(total_epochs - warmup_epochs, 1e-12))
    return final_lr + (base_lr - final_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


SCHEDULES = {"constant": constant, "step": step, "cosine": cosine}


class Schedule:
    """A named schedule with its options: ``Schedule("cosine", 0.05, 5)(epoch=2.5)``."""

    def __init__(self, name, base_lr, total_epochs, **options):
        if name not in SCHEDULES:
            raise ValueError(f"unknown schedule {name!r}; expected one of {sorted(SCHEDULES)}")
        self.name, self.base_lr, self.total_epochs, self.options = name, base_lr, total_epochs, options
        self(0.0)  # bad options fail now, not mid-run

    def __call__(self, epoch):
        return SCHEDULES[self.name](self.base_lr, epoch, self.total_epochs, **self.options)
