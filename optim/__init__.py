"""Optimizers and learning-rate schedules."""
from xpnn.optim.adam import DEFAULT_BETAS, DEFAULT_EPS, AdamOptimizer, AdamWOptimizer
from xpnn.optim.factory import OPTIMIZER_OPTIONS, OPTIMIZERS, make_optimizer
from xpnn.optim.packing import PackedParameters
from xpnn.optim.schedules import SCHEDULES, Schedule
from xpnn.optim.sgd import DEFAULT_MOMENTUM, MomentumSGDOptimizer, SGDOptimizer

__all__ = ["AdamOptimizer", "AdamWOptimizer", "DEFAULT_BETAS", "DEFAULT_EPS", "DEFAULT_MOMENTUM",
           "MomentumSGDOptimizer", "OPTIMIZERS", "OPTIMIZER_OPTIONS", "PackedParameters",
           "SCHEDULES", "SGDOptimizer", "Schedule", "make_optimizer"]
