"""Optimizers and learning-rate schedules."""
from xpnn.optim.factory import OPTIMIZERS, make_optimizer
from xpnn.optim.packing import PackedParameters
from xpnn.optim.schedules import SCHEDULES, Schedule
from xpnn.optim.sgd import DEFAULT_MOMENTUM, MomentumSGDOptimizer, SGDOptimizer

__all__ = ["DEFAULT_MOMENTUM", "MomentumSGDOptimizer", "OPTIMIZERS", "PackedParameters",
           "SCHEDULES", "SGDOptimizer", "Schedule", "make_optimizer"]
