"""The errors of the training package; run.py turns each into a one-line message."""


class TrainingError(RuntimeError):
    """Base class: a training run went wrong; the message says what and what to do."""


class CheckpointError(TrainingError):
    """A checkpoint is missing, unreadable, of another format version or another architecture."""


class RunFolderError(TrainingError):
    """A run folder cannot be created, written to, or resumed from."""


class DivergenceError(TrainingError):
    """The loss became NaN or infinite; the last good checkpoint was left as it was."""


class TrainingInterrupted(TrainingError):
    """Training stopped on SIGINT/SIGTERM (`signal_number`; exit code 128 + it) after saving a
    checkpoint in `run_dir`."""

    def __init__(self, message, signal_number, run_dir):
        super().__init__(message)
        self.signal_number, self.run_dir = signal_number, run_dir
