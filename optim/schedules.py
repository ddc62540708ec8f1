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
    """A named schedule with its options: ``Schedule("cosine", 0.05, 5)(epoch=2.5)``.

    The cosine's warm-up is `warmup_epochs` or `warmup_steps` (which needs `steps_per_epoch`,
    and lasts as many steps whatever an epoch's length).
    """

    def __init__(self, name, base_lr, total_epochs, steps_per_epoch=None, **options):
        if name not in SCHEDULES:
            raise ValueError(f"unknown schedule {name!r}; expected one of {sorted(SCHEDULES)}")
        if "warmup_steps" in options:
            if "warmup_epochs" in options:
                raise ValueError("give warmup_steps or warmup_epochs, not both")
            if steps_per_epoch is None:
                raise ValueError("warmup_steps needs the run's steps_per_epoch")
            options["warmup_epochs"] = options.pop("warmup_steps") / steps_per_epoch
        self.steps_per_epoch = steps_per_epoch
        self.name, self.base_lr, self.total_epochs, self.options = name, base_lr, total_epochs, options
        self(0.0)  # bad options fail now, not mid-run

    def __call__(self, epoch):
        return SCHEDULES[self.name](self.base_lr, epoch, self.total_epochs, **self.options)

    def warmup_note(self):
        """One line when the warm-up takes more than half of the run's steps (the rate then
        reaches less of base_lr, or reaches it late), else None."""
        warmup = self.options.get("warmup_epochs", 0.0)
        if self.name != "cosine" or not self.steps_per_epoch or warmup <= self.total_epochs / 2:
            return None
        steps = self.total_epochs * self.steps_per_epoch
        highest = max(self(step / self.steps_per_epoch) for step in range(steps))
        return (f"note: the warm-up ({warmup * self.steps_per_epoch:g} steps) takes more than "
                f"half of this run's {steps} steps, so the learning rate reaches "
                f"{highest:.3g} of {self.base_lr:g} at most; set train.schedule.warmup_steps "
                f"lower to reach it sooner")
