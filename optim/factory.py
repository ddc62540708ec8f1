"""The optimizer a config's ``train`` section names."""
from xpnn.optim.sgd import MomentumSGDOptimizer, SGDOptimizer

OPTIMIZERS = ("momentum_sgd", "sgd")


def make_optimizer(train_config, parameters, lr=None):
    """``momentum_sgd`` or ``sgd`` over `parameters` (already on their device), with the
    section's lr (unless `lr` is given), momentum and weight_decay (defaults 0.01, 0.9, 0)."""
    train_config = train_config or {}
    name = train_config.get("optimizer", "momentum_sgd")
    lr = train_config.get("lr", 0.01) if lr is None else lr
    weight_decay = train_config.get("weight_decay", 0.0)
    if name == "momentum_sgd":
        return MomentumSGDOptimizer(parameters, lr, train_config.get("momentum", 0.9),
                                    weight_decay)
    if name == "sgd":
        return SGDOptimizer(parameters, lr, weight_decay)
    raise ValueError(f"train.optimizer {name!r} is not known; expected one of {list(OPTIMIZERS)}")
