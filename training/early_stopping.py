"""Early stopping on validation accuracy (``train.early_stopping: {patience, min_delta}``).

    watch = EarlyStopping()                    # or restored from a checkpoint's RunState
    watch.count(val_acc, rule)                 # after each epoch's evaluation
    if watch.stopped: ... watch.message(rule, epoch, epochs) ...
"""
from dataclasses import dataclass


@dataclass
class EarlyStopping:
    """`reference`: the validation accuracy of the last gain; `stale_epochs`: epochs since it;
    `stopped`: once `patience` epochs in a row gained less than `min_delta` over `reference`."""
    reference: float = None
    stale_epochs: int = 0
    stopped: bool = False

    def count(self, val_acc, rule):
        """Count an epoch of validation accuracy `val_acc` under `rule` (patience, min_delta): a
        gain of at least min_delta resets the count, a smaller one (or none) adds to it."""
        gain = None if self.reference is None else val_acc - self.reference
        if gain is None or (gain > 0 and gain >= rule["min_delta"]):
            self.reference, self.stale_epochs = val_acc, 0
        else:
            self.stale_epochs += 1
            self.stopped = self.stale_epochs >= rule["patience"]

    def message(self, rule, epoch, epochs):
        """The line that says the run stopped after `epoch` of `epochs`, and why."""
        return (f"early stopping: validation accuracy gained less than "
                f"{100 * rule['min_delta']:g} points in {rule['patience']} epoch(s) after "
                f"reaching {100 * self.reference:.2f}%; stopped after epoch {epoch} of {epochs}")
