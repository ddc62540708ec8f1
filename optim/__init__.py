"""Optimizers and learning-rate schedules."""
from optim.factory import OPTIMIZERS, make_optimizer
from optim.packing import pack_parameters
from optim.schedules import SCHEDULES, Schedule
from optim.sgd import MomentumSGDOptimizer, SGDOptimizer

__all__ = ["MomentumSGDOptimizer", "OPTIMIZERS", "SCHEDULES", "SGDOptimizer", "Schedule",
           "make_optimizer", "pack_parameters"]
