"""The optimizer a config's ``train`` section names: the table of optimizers."""
from xpnn.optim.sgd import MomentumSGDOptimizer, SGDOptimizer

OPTIMIZERS = {"momentum_sgd": MomentumSGDOptimizer, "sgd": SGDOptimizer}


def make_optimizer(train_config, parameters, lr=None):
    """The optimizer `train_config["optimizer"]` names, over `parameters`, with the section's lr
    (unless `lr` is given) and whichever of momentum and weight_decay it sets (else the
    optimizer's own defaults)."""
    name = train_config.get("optimizer")
    if name not in OPTIMIZERS:
        raise ValueError(f"train.optimizer {name!r} is not known; expected one of "
                         f"{list(OPTIMIZERS)}")
    options = {key: train_config[key] for key in ("weight_decay", "momentum")
               if key in train_config and (key != "momentum" or name == "momentum_sgd")}
    return OPTIMIZERS[name](parameters, train_config["lr"] if lr is None else lr, **options)
