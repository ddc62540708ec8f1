"""Optimizers and learning-rate schedules."""
if __name__ != "xpnn.optim":  # `import optim` finds this only from a checkout's root
    raise ImportError(f"{__name__} is part of the package xpnn: import xpnn.optim")
from xpnn.optim.adam import DEFAULT_BETAS, DEFAULT_EPS, AdamOptimizer, AdamWOptimizer
from xpnn.optim.factory import OPTIMIZER_OPTIONS, OPTIMIZERS, make_optimizer
from xpnn.optim.packing import PackedParameters
from xpnn.optim.schedules import SCHEDULES, Schedule
from xpnn.optim.sgd import DEFAULT_MOMENTUM, MomentumSGDOptimizer, SGDOptimizer

__all__ = ["AdamOptimizer", "AdamWOptimizer", "DEFAULT_BETAS", "DEFAULT_EPS", "DEFAULT_MOMENTUM",
           "MomentumSGDOptimizer", "OPTIMIZERS", "OPTIMIZER_OPTIONS", "PackedParameters",
           "SCHEDULES", "SGDOptimizer", "Schedule", "make_optimizer"]
