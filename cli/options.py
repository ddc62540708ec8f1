"""Options that several commands share, and how their values become library objects."""
import functools
from pathlib import Path

import click

MESSAGE_LIMIT = 1000      # characters of a one-line message


def one_line(error):
    """The error's message on one line (OS errors as 'reason: file'); past `MESSAGE_LIMIT`
    characters, its start and end (what was wrong, often what to do) without the middle."""
    if isinstance(error, OSError) and error.strerror:
        text = f"{error.strerror}: {error.filename}" if error.filename else error.strerror
    else:
        text = str(error) or type(error).__name__
    text = " ".join(text.split())
    if len(text) <= MESSAGE_LIMIT:
        return text
    head, tail = MESSAGE_LIMIT * 3 // 4, MESSAGE_LIMIT // 5
    return f"{text[:head]} [... {len(text) - head - tail:,} characters ...] {text[-tail:]}"


def _check_device(ctx, param, value):
    from xpnn.backend.device import parse_device_name
    if value is not None:
        try:
            parse_device_name(value)
        except ValueError:
            raise click.BadParameter(f"{value!r}; expected cpu, gpu, cuda or cuda:N") from None
    return value


def device_option(name="--device", default="cpu", help_text=None):
    return click.option(name, default=default, show_default=default is not None,
                        callback=_check_device, metavar="DEVICE",
                        help=help_text or "where to compute: cpu (NumPy), gpu / cuda / cuda:N (CuPy)")


PRECISIONS = ("fp32", "tf32", "bf16")  # backend.dispatch.PRECISIONS, without importing NumPy
REMOVED_MODE_FLAGS = {
    "--cuda-graph": "a GPU run now replays each training step as a CUDA graph by default; "
                    "--eager turns it off",
    "--fused-kernels": "a GPU run now computes with the fused CUDA kernels by default; "
                       "--array-code turns them off",
}
REMOVED_MODE_VARIABLES = {"XPNN_CUDA_GRAPH": "--eager", "XPNN_FUSED_KERNELS": "--array-code"}


def _removed(ctx, param, value):
    if value:
        raise click.UsageError(f"{param.opts[0]} is gone: {REMOVED_MODE_FLAGS[param.opts[0]]}")


def mode_options(graph=True):
    """--array-code (and, with `graph`, --eager); the removed --fused-kernels and --cuda-graph
    are one-line errors naming them."""
    options = [click.option("--array-code", is_flag=True,
                            help="on a GPU: the array code instead of the fused CUDA kernels")]
    if graph:
        options.append(click.option(
            "--eager", is_flag=True, help="on a GPU: launch every kernel from Python instead of "
                                          "replaying each training step as one CUDA graph"))
    options += [click.option(flag, is_flag=True, hidden=True, expose_value=False,
                             callback=_removed) for flag in REMOVED_MODE_FLAGS]
    return lambda function: functools.reduce(lambda f, option: option(f), reversed(options),
                                             function)


def precision_option(help_text):
    return click.option("--precision", type=click.Choice(PRECISIONS), help=help_text)


def command_mode(device, ranks=1, eager=True, array_code=False, precision="fp32"):
    """The `backend.Mode` that a command's flags ask for on `device` (a `Device`)."""
    import os

    from xpnn.backend import command_mode as mode
    for variable, flag in REMOVED_MODE_VARIABLES.items():
        if variable in os.environ:
            raise click.UsageError(f"{variable} is gone: a GPU run uses the fused kernels and the "
                                   f"CUDA graph by default; unset it ({flag} opts out)")
    return mode(device, ranks, eager, array_code, precision or "fp32")


class _Count(click.types.IntRange):
    """A count >= 1 (`min=1`); a bad one from the option's environment variable names it."""

    def convert(self, value, param, ctx):
        try:
            return super().convert(value, param, ctx)
        except click.BadParameter:
            if ctx is None or ctx.get_parameter_source(param.name) is not \
                    click.core.ParameterSource.ENVIRONMENT:
                raise
            self.fail(f"{param.envvar} must be a whole number >= 1, got {value!r}", param, ctx)


processes_option = click.option(
    "--processes", type=_Count(min=1), envvar="XPNN_PROCESSES",
    help="start this many ranks through mpiexec (pip install 'xpnn[mpi]'), as mpiexec -n N xpnn "
         "train ... does; 1: one process, on --workers threads  [default: XPNN_PROCESSES, else "
         "on the CPU one rank per core where mpiexec is installed, else 1; a resumed run's own]")


def config_option(required=False):
    from xpnn import configs
    return click.option(
        "-c", "--config", "config_spec", required=required, metavar="CONFIG",
        help=f"a YAML config file, or the name of one shipped with xpnn: "
             f"{', '.join(configs.shipped())}")


def _parse_overrides(ctx, param, values):
    from xpnn.nets import ConfigError
    from xpnn.training.overrides import parse_override
    try:
        return [parse_override(value) for value in values]
    except ConfigError as error:
        raise click.BadParameter(one_line(error)) from None


set_option = click.option(
    "--set", "overrides", multiple=True, metavar="KEY=VALUE", callback=_parse_overrides,
    help="change one config value, e.g. --set train.momentum=0.95 or --set "
         "model.layers.9.out_features=200 (repeatable; the value is read as YAML)")


def shorthands(epochs=None, batch_size=None, lr=None, seed=None, precision=None, dataset=None):
    """The `Override`s that train's shorthand options stand for (--lr X: --set train.lr=X,
    --dataset NAME: --set data.dataset=NAME), in that order; none for an option not given."""
    from xpnn.training.overrides import Override
    values = {"train.epochs": epochs, "train.batch_size": batch_size, "train.lr": lr,
              "train.seed": seed, "train.precision": precision, "data.dataset": dataset}
    return [Override(key, value, f"--{key.split('.')[1].replace('_', '-')} {value}")
            for key, value in values.items() if value is not None]


def load_config(config_spec, overrides=()):
    """The checked config that -c (a file or a shipped config's name) and --set describe."""
    from xpnn.training.config import load_config as load
    return load(config_spec, overrides)


def output_option(help_text, file_okay=True, dir_okay=False):
    """-o/--output, the one spelling of 'where to write' in every command."""
    return click.option("-o", "--output", type=click.Path(file_okay=file_okay, dir_okay=dir_okay,
                                                          path_type=Path), help=help_text)


dataset_option = click.option(
    "--dataset", help="same as --set data.dataset=NAME: mnist, fashion-mnist, or idx (any folder "
                      "of IDX files, with --data-dir)")
data_dir_option = click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
                               help="read the dataset's IDX files from this folder")
