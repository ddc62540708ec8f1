"""The `xpnn` command group: every command, and where library errors become one-line messages."""
import contextlib
import sys

import click

from xpnn import __version__
from xpnn.cli.bench import bench
from xpnn.cli.describe import describe
from xpnn.cli.evaluate import evaluate
from xpnn.cli.export import export
from xpnn.cli.options import one_line
from xpnn.cli.parity import parity
from xpnn.cli.plot import plot
from xpnn.cli.predict import predict
from xpnn.cli.train import train

EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C


def _known_errors():
    """The library's error types that mean bad input or a stopped run, not a bug."""
    from xpnn.backend import DeviceUnavailableError
    from xpnn.backend.communicator import RankError
    from xpnn.data import DataError
    from xpnn.inference.onnx_export import ExportError
    from xpnn.layers import ShapeError
    from xpnn.nets import ConfigError
    from xpnn.training.errors import TrainingError
    return (ConfigError, DataError, DeviceUnavailableError, ExportError, RankError, ShapeError,
            TrainingError, OSError)


class CommandGroup(click.Group):
    """The one place where the library's known errors become one-line messages and exit codes."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        """click's `main`, but Ctrl-C anywhere exits 130 with one line (click's: "Aborted!", 1)."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            code = super().main(args, prog_name, complete_var, False, **extra)
        except click.ClickException as error:
            error.show()
            sys.exit(error.exit_code)
        except (click.Abort, KeyboardInterrupt):
            click.echo("interrupted", err=True)
            sys.exit(EXIT_INTERRUPTED)
        sys.exit(code if isinstance(code, int) else 0)  # a code from ctx.exit, else success

    def invoke(self, ctx):
        from xpnn.backend.communicator import world
        from xpnn.cli.ranks import continue_command
        from xpnn.training.errors import TrainingInterrupted
        try:
            return super().invoke(ctx)
        except TrainingInterrupted as stop:
            ranks = world()
            if ranks.is_root:  # every rank stopped at the same step; one says so
                click.echo(f"{one_line(stop)}; continue with: "
                           f"{continue_command(ctx, ranks, stop.run_dir)}", err=True)
            ctx.exit(128 + stop.signal_number)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(EXIT_INTERRUPTED)
        except BrokenPipeError:  # output piped into `head` and the like: stop quietly
            sys.stderr.close()
            ctx.exit(0)
        except _known_errors() as error:
            raise click.ClickException(one_line(error)) from None


@click.group(cls=CommandGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="xpnn")
def cli():
    """xpnn: train small convolutional networks on MNIST and Fashion-MNIST, on the CPU (NumPy)
    or a CUDA GPU (CuPy), then evaluate them, classify your own images, or export them."""


for command in (train, evaluate, predict, export, describe, plot, bench, parity):
    cli.add_command(command)


def run():
    """Run the `xpnn` command on this process's arguments; return or exit with its exit code."""
    from xpnn.backend.communicator import launched_size
    for stream in (sys.stdout, sys.stderr):  # file names not valid UTF-8 are written as bytes
        with contextlib.suppress(AttributeError, ValueError):  # not a text stream of io's
            stream.reconfigure(errors="surrogateescape")
    if launched_size() > 1:  # one of several MPI ranks: they end together
        from xpnn.cli.ranks import run_as_rank
        return run_as_rank(cli)
    cli()
