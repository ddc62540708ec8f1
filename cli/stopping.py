"""SIGINT and SIGTERM at any moment of a command: exit 130 or 143, no traceback.

`run(command)` installs the handlers first thing (this module imports only the standard
library, so nothing heavy has been imported yet), runs `command` and exits with its code.
Training installs its own handlers while it trains (it saves last.npz and stops at a step);
everywhere else a signal raises `Stopped` where the program is, which unwinds like an error:
files being written atomically are left whole, a new run folder that holds no checkpoint yet
is removed again (`training.files.FolderLock`), and the command exits with 128 + the signal.
A signal that arrives once the command is over makes its exit code 128 + the signal, and
during the exit itself ends the process at once with that code.
"""
import atexit
import contextlib
import os
import signal
import sys

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Stopped(BaseException):
    """A SIGINT or SIGTERM (`signal_number`) arrived outside the training loop; a BaseException,
    so that no `except Exception` swallows it. `run_dir`: set by `xpnn train` when the run it
    was working on can be resumed."""

    def __init__(self, signal_number):
        super().__init__(f"{signal.Signals(signal_number).name}: stopped")
        self.signal_number = signal_number
        self.run_dir = None


# "running": a signal raises `Stopped`; "finishing" (the command is over, its clean-up runs): it
# is noted, and the exit code becomes 128 + it; "exiting": the process ends at once with that code.
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


def install():
    """Make SIGINT and SIGTERM raise `Stopped` (in the main thread; elsewhere a no-op)."""
    with contextlib.suppress(ValueError):  # not the main thread: the caller handles signals
        for number in STOP_SIGNALS:
            signal.signal(number, _on_signal)


def run(command, describe=None, finish=None):
    """Run `command()` and end the process with its exit code (None: 0; a string: printed, 1),
    or with 128 + the signal that stopped it, whenever that came.

    `describe(stop)` gives the one line printed for a `Stopped` (default: its message);
    `finish()` is called once the command is over, however it ended (it must not raise).
    The process ends with `os._exit` after the atexit functions ran and the output was
    flushed: the interpreter's own shutdown, which puts back the default signal actions (to
    die by the signal), is skipped.
    """
    install()
    code = 1
    try:
        try:
            code = command()
        except SystemExit as end:
            code = end.code
        except Stopped as stop:
            code = 128 + stop.signal_number
            print(describe(stop) if describe is not None else str(stop), file=sys.stderr)
        except KeyboardInterrupt:  # raised by code that installed its own handler
            code = 128 + signal.SIGINT
        finally:
            _state["phase"] = "finishing"
            if finish is not None:
                finish()
    except Stopped as stop:  # as the command ended, before its clean-up began
        code = 128 + stop.signal_number
        if finish is not None:
            finish()
    if code is None:
        code = 0
    elif not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    _state["phase"] = "exiting"
    if _state["signal"] is not None:
        code = 128 + _state["signal"]
    try:
        atexit._run_exitfuncs()
    finally:
        _exit_now(128 + _state["signal"] if _state["signal"] is not None else code)
