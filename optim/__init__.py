"""Optimizers and learning-rate schedules."""
from xpnn.optim.factory import OPTIMIZERS, make_optimizer
from xpnn.optim.packing import PackedParameters
from xpnn.optim.schedules import SCHEDULES, Schedule
from xpnn.optim.sgd import MomentumSGDOptimizer, SGDOptimizer

__all__ = ["MomentumSGDOptimizer", "OPTIMIZERS", "SCHEDULES", "SGDOptimizer", "Schedule",
           "PackedParameters", "make_optimizer"]
