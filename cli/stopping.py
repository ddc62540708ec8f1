"""SIGINT and SIGTERM at any moment of a command: exit 130 or 143, no traceback. Only the
standard library is imported, so `run` installs its handlers before anything heavy is (the
training loop installs its own).
"""
import atexit
import contextlib
import os
import signal
import sys

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Stopped(BaseException):
    """A SIGINT or SIGTERM (`signal_number`) arrived outside the training loop. `run_dir`: set
    by `xpnn train` when the run it was working on can be resumed."""

    def __init__(self, signal_number):
        super().__init__(f"{signal.Signals(signal_number).name}: stopped")
        self.signal_number = signal_number
        self.run_dir = None


# phase "running": a signal raises `Stopped`; "finishing": it is noted (the exit code becomes
# 128 + it); "exiting": the process ends at once with that code.
_state = {"phase": "running", "signal": None}


def _on_signal(number, frame):
    if _state["signal"] is None:
        _state["signal"] = number
    if _state["phase"] == "exiting":
        _exit_now(128 + _state["signal"])
    if _state["phase"] == "running" and _state["signal"] == number:
        _state["phase"] = "finishing"  # the first signal unwinds the program; later ones wait
        raise Stopped(number)


def _exit_now(code):
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed or broken stream: nothing more to say
            stream.flush()
    os._exit(code)


def run(command, describe, finish):
    """Make SIGINT and SIGTERM raise `Stopped` (in the main thread), run `command()` and end the
    process with its exit code (None: 0; a string: printed, 1), or with 128 + the signal that
    stopped it, whenever that came. `describe(stop)`: the line printed for a `Stopped`;
    `finish()`: called once the command is over, however it ended (it must not raise). The
    process ends with `os._exit` after the atexit functions ran (no interpreter shutdown)."""
    with contextlib.suppress(ValueError):  # not the main thread: the caller handles signals
        for number in STOP_SIGNALS:
            signal.signal(number, _on_signal)
    code = 1
    try:
        try:
            code = command()
        except SystemExit as end:
            code = end.code
        except Stopped as stop:
            code = 128 + stop.signal_number
            print(describe(stop), file=sys.stderr)
        except KeyboardInterrupt:  # raised by code that installed its own handler
            code = 128 + signal.SIGINT
        finally:
            _state["phase"] = "finishing"
            finish()
    except Stopped as stop:  # as the command ended, before its clean-up began
        code = 128 + stop.signal_number
        finish()
    if code is None:
        code = 0
    elif not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    _state["phase"] = "exiting"
    try:
        atexit._run_exitfuncs()
    finally:
        _exit_now(128 + _state["signal"] if _state["signal"] is not None else code)
