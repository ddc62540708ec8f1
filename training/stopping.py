"""Stopping on SIGINT/SIGTERM at a step boundary, every rank at the same step.

    stops = StopSignals(ranks)
    with stops.handled():
        ... if stops.requested(step): save and raise ...
"""
import contextlib
import signal
import threading

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
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {number: signal.signal(number, self._on_signal) for number in STOP_SIGNALS}
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
