"""Optimizers and learning-rate schedules."""
from optim.packing import pack_parameters
from optim.schedules import SCHEDULES, Schedule
from optim.sgd import MomentumSGDOptimizer, SGDOptimizer

__all__ = ["MomentumSGDOptimizer", "SCHEDULES", "SGDOptimizer", "Schedule", "pack_parameters"]
