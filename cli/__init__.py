"""The command line: ``xpnn COMMAND`` (installed), ``python -m xpnn`` or ``python run.py``.

Importing this package imports only `stopping`, so that `main()` installs the signal handlers
before anything heavy is imported.
"""
if __name__ != "xpnn.cli":  # `import cli` finds this only from a checkout's root
    raise ImportError(f"{__name__} is part of the package xpnn: import xpnn.cli")
import contextlib
import sys

from xpnn.cli import stopping


def main():
    """Entry point of the `xpnn` command, `python -m xpnn` and `python run.py`."""
    stopping.run(lambda: _main_module().run(), describe=_describe_stop, finish=_release_folders)


_entry = main


def _main_module():
    """xpnn.cli.main (importing it binds the package's `main` to it: the entry is put back)."""
    import importlib
    module = importlib.import_module("xpnn.cli.main")
    globals()["main"] = _entry
    return module


def _describe_stop(stop):
    """The line printed when a signal stops a command outside the training loop."""
    if stop.run_dir is None:
        return f"{stop}"
    import shlex
    name = sys.argv[0] if sys.argv else "xpnn"
    program = ("python -m xpnn" if name.endswith("__main__.py")
               else f"python {name}" if name.endswith(".py") else "xpnn")
    return (f"{stop}; the run can be continued with: {program} train --resume "
            f"{shlex.quote(str(stop.run_dir))}")


def _release_folders():
    """Give up the run folders this process holds (removing a new run's that has no checkpoint)."""
    files = sys.modules.get("xpnn.training.files")
    if files is not None:
        with contextlib.suppress(Exception):  # at exit: the OS drops the locks anyway
            files.release_all()


def __getattr__(name):
    if name == "cli":
        return _main_module().cli
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["cli", "main"]
