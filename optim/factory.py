"""The optimizer a config's ``train`` section names: the table of optimizers and their options."""
import inspect

from xpnn.optim.adam import AdamOptimizer, AdamWOptimizer
from xpnn.optim.sgd import MomentumSGDOptimizer, SGDOptimizer

OPTIMIZERS = {"momentum_sgd": MomentumSGDOptimizer, "sgd": SGDOptimizer, "adam": AdamOptimizer,
              "adamw": AdamWOptimizer}
# The train-section keys each optimizer takes: its keywords after lr (checked by training.config).
OPTIMIZER_OPTIONS = {name: tuple(inspect.signature(optimizer).parameters)[2:]
                     for name, optimizer in OPTIMIZERS.items()}


def make_optimizer(train_config, parameters, lr=None):
    """The optimizer `train_config["optimizer"]` names, over `parameters`, with the section's lr
    (unless `lr` is given) and those of its `OPTIMIZER_OPTIONS` the section sets."""
    name = train_config.get("optimizer")
    if name not in OPTIMIZERS:
        raise ValueError(f"train.optimizer {name!r} is not known; expected one of "
                         f"{list(OPTIMIZERS)}")
    options = {key: train_config[key] for key in OPTIMIZER_OPTIONS[name] if key in train_config}
    return OPTIMIZERS[name](parameters, train_config["lr"] if lr is None else lr, **options)
