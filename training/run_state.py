"""Where a training run stands: the typed record a checkpoint carries beside the weights
(`RunState`), every field checked on reading; fields that older checkpoints lack take the values
those runs had."""
import math
from dataclasses import dataclass, field, fields

from xpnn.training.errors import CheckpointError

STATE_VERSION = 1  # the run-state fields' version (checkpoint format_version 1 holds them)
LARGEST = 2**53    # above this, a count was edited (and JSON readers lose whole numbers)
SHUFFLE = "numpy.random.default_rng([seed, epoch]).permutation(train_count)"  # for readers


@dataclass
class EpochProgress:
    """The current epoch's running sums at the checkpoint, and the seconds it had taken."""
    loss_sum: float = 0.0
    correct: int = 0
    seen: int = 0
    seconds: float = 0.0


@dataclass
class RunState:
    """A run's position and history: `epoch` whole epochs done and `step` steps of the next;
    `metrics`, a record per finished epoch; what a resumed run keeps (`config` to `ranks`);
    early stopping's `stop_reference` (the validation accuracy of the last gain) and
    `stale_epochs` since it; `model_name` and after: for people reading the file."""
    config: dict
    epoch: int
    step: int
    steps_per_epoch: int = None
    train_count: int = None
    limit_train: int = None
    limit_test: int = None
    checkpoint_every: int = 0
    workers: int = None
    ranks: int = 1
    metrics: list = field(default_factory=list)
    best_val_acc: float = None
    epoch_progress: EpochProgress = field(default_factory=EpochProgress)
    stop_reference: float = None
    stale_epochs: int = 0
    stopped_early: bool = False
    model_name: str = None
    num_parameters: int = None
    shuffle: str = None
    device: str = None
    saved_at: str = None
    version: int = STATE_VERSION

    @classmethod
    def from_json(cls, meta, where):
        """The `RunState` in a checkpoint's JSON `meta`, checked (`check`)."""
        values = {f.name: meta[f.name] for f in fields(cls) if f.name in meta}
        progress = values.get("epoch_progress", {})
        _check(where, "epoch_progress", progress, isinstance(progress, dict),
               "a mapping of loss_sum, correct, seen and seconds")
        values["epoch_progress"] = EpochProgress(**{
            f.name: progress[f.name] for f in fields(EpochProgress) if f.name in progress})
        state = cls(**values)
        state.check(where)
        return state

    def check(self, where):
        """Raise `CheckpointError` (starting with `where`) naming the first field of the wrong
        type or out of range."""
        _check(where, "version", self.version, self.version == STATE_VERSION,
               f"{STATE_VERSION} (this xpnn's run state)")
        _check(where, "config", self.config, isinstance(self.config, dict), "a mapping")
        for name, low in (("epoch", 0), ("step", 0), ("steps_per_epoch", 1), ("train_count", 1),
                          ("limit_train", 1), ("limit_test", 1), ("checkpoint_every", 0),
                          ("workers", 1), ("ranks", 1), ("num_parameters", 0)):
            value = getattr(self, name)
            optional = name not in ("epoch", "step", "checkpoint_every", "ranks")
            _check(where, name, value, (optional and value is None) or _whole(value, low),
                   f"a whole number from {low} to {LARGEST:,}" + (" or null" if optional else ""))
        if self.steps_per_epoch is not None:
            _check(where, "step", self.step, self.step <= self.steps_per_epoch,
                   f"at most steps_per_epoch ({self.steps_per_epoch})")
        _check(where, "metrics", self.metrics, isinstance(self.metrics, list)
               and len(self.metrics) == self.epoch
               and all(isinstance(record, dict) and all(
                   value is None or _number(value) for value in record.values())
                   for record in self.metrics),
               f"a list of {self.epoch} epoch record(s) of numbers (one per finished epoch)")
        for name in ("best_val_acc", "stop_reference"):
            value = getattr(self, name)
            _check(where, name, value, value is None or (_number(value) and 0 <= value <= 1),
                   "null or in [0, 1]")
        _check(where, "stale_epochs", self.stale_epochs,
               _whole(self.stale_epochs) and self.stale_epochs <= self.epoch,
               f"a whole number from 0 to epoch ({self.epoch})")
        _check(where, "stopped_early", self.stopped_early, isinstance(self.stopped_early, bool),
               "true or false")
        progress = self.epoch_progress
        for name, low, kind in (("loss_sum", None, _number), ("correct", 0, _whole),
                                ("seen", 0, _whole), ("seconds", 0, _number)):
            value = getattr(progress, name)
            _check(where, f"epoch_progress.{name}", value,
                   kind(value) and (low is None or value >= low),
                   "a finite number" + ("" if low is None else " >= 0")
                   + (", whole" if kind is _whole else ""))
        _check(where, "epoch_progress.correct", progress.correct,
               progress.correct <= progress.seen, f"at most epoch_progress.seen ({progress.seen})")
        for name in ("model_name", "shuffle", "device", "saved_at"):
            value = getattr(self, name)
            _check(where, name, value, value is None or isinstance(value, str), "a string")


def check_scalars(where, scalars):
    """Raise `CheckpointError` unless the optimizer's scalars are a mapping of finite numbers."""
    _check(where, "optimizer_scalars", scalars, isinstance(scalars, dict), "a mapping")
    for name, value in scalars.items():
        whole = name == "steps"
        _check(where, f"optimizer_scalars.{name}", value,
               _whole(value) if whole else _number(value),
               f"a whole number from 0 to {LARGEST:,}" if whole else "a finite number")


def _whole(value, low=0):
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= LARGEST


def _number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and \
        math.isfinite(value)


def _check(where, name, value, ok, expected):
    if not ok:
        shown = repr(value)
        shown = shown if len(shown) <= 40 else shown[:37] + "..."
        raise CheckpointError(f"{where} has a bad {name}: {shown}; it must be {expected} (an "
                              f"edited or damaged file?)")
