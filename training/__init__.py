"""Training: configs, the training loop, checkpoints, metrics and run folders.

    from xpnn.training import load_config, start_run, resume_run
    config = load_config("configs/lenet.yaml", overrides={"epochs": 1})
    trainer = start_run(config, get_device("cpu"), "runs/lenet-try", limit_train=5000)
    trainer.fit()                        # last.npz, best.npz, metrics.jsonl in runs/lenet-try
    resume_run("runs/lenet-try", get_device("cpu")).fit()   # after a crash or Ctrl-C

The modules: DESIGN.md ("Packages").
"""
if __name__ != "xpnn.training":  # `import training` finds this only from a checkout's root
    raise ImportError(f"{__name__} is part of the package xpnn: import xpnn.training")
from xpnn.training.checkpoint import Checkpoint, check_matches, load_checkpoint, restore, save_checkpoint
from xpnn.training.config import load_config, validate_config
from xpnn.training.errors import (CheckpointError, DivergenceError, RunFolderError, TrainingError,
                             TrainingInterrupted)
from xpnn.training.metrics import confusion_matrix, evaluate, read_metrics
from xpnn.training.runs import default_run_dir, load_data, resume_run, start_run
from xpnn.training.trainer import Trainer

__all__ = ["Checkpoint", "CheckpointError", "DivergenceError", "RunFolderError", "Trainer",
           "TrainingError", "TrainingInterrupted", "check_matches", "confusion_matrix",
           "default_run_dir", "evaluate", "load_checkpoint", "load_config", "load_data",
           "read_metrics", "restore", "resume_run", "save_checkpoint", "start_run",
           "validate_config"]
