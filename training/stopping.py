"""Stopping: on SIGINT/SIGTERM at a step boundary, every rank at the same step (`StopSignals`),
and early, on validation accuracy (`EarlyStopping`, ``train.early_stopping``).
"""
import contextlib
import signal
import threading
from dataclasses import dataclass

import numpy

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopSignals:
    """The stop signal received (`signal`, None until one is), and the ranks' shared decision to
    stop. `every`: the steps between the ranks' votes (each a collective)."""

    def __init__(self, ranks, every):
        self.ranks, self.every = ranks, every
        self.signal = None

    def _on_signal(self, signal_number, frame):
        if self.signal is not None and signal_number == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop at once (last.npz stays whole)
        self.signal = signal_number

    @contextlib.contextmanager
    def handled(self):
        """A block in which SIGINT and SIGTERM are recorded rather than fatal (main thread only:
        elsewhere Python cannot install handlers)."""
        previous = ({number: signal.signal(number, self._on_signal) for number in STOP_SIGNALS}
                    if threading.current_thread() is threading.main_thread() else {})
        try:
            yield
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)

    def requested(self, step=0):
        """Whether a signal asks to stop before `step` of the epoch. On several ranks they decide
        together, every `every` steps: any rank's signal stops every rank at the same step (so
        the checkpoint they save is one state)."""
        if self.ranks.size == 1:
            return self.signal is not None
        if step % self.every:
            return False
        signals = numpy.zeros(self.ranks.size)
        signals[self.ranks.rank] = self.signal or 0
        self.ranks.sum_in_rank_order(signals)
        received = [int(number) for number in signals if number]
        if received and self.signal is None:
            self.signal = received[0]
        return bool(received)

    def cuts_evaluation(self):
        """A signal cuts an evaluation short on one rank; ranks finish it (and decide together
        at the next `requested`)."""
        return self.ranks.size == 1 and self.signal is not None


@dataclass
class EarlyStopping:
    """`reference`: the validation accuracy of the last gain; `stale_epochs`: epochs since it;
    `stopped`: once `patience` epochs in a row gained less than `min_delta` over `reference`."""
    reference: float = None
    stale_epochs: int = 0
    stopped: bool = False

    def count(self, val_acc, rule):
        """Count an epoch of validation accuracy `val_acc` under `rule` (patience, min_delta)."""
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
