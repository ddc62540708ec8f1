"""The command line: ``xpnn COMMAND`` (installed), ``python -m xpnn`` or ``python run.py``.

One module per command (train, evaluate, describe, plot, bench, parity); `main` holds the group
and turns the library's errors into one-line messages; `options` the options they share.
"""
from xpnn.cli.main import cli, main

__all__ = ["cli", "main"]
