#!/usr/bin/env python
"""xpnn command line: train, evaluate, describe, plot, bench and parity.

    python run.py train -c configs/lenet.yaml                 # runs/lenet-<timestamp>/
    python run.py train --resume runs/lenet-20260101-120000   # after a crash or Ctrl-C
    python run.py evaluate runs/lenet-20260101-120000/best.npz
    python run.py describe -c configs/resnet.yaml
    python run.py plot runs/lenet-20260101-120000
    python run.py bench -c configs/resnet.yaml --device gpu
    python run.py parity -c configs/resnet.yaml --device-a cpu --device-b gpu

Bad input (a config typo, a missing data file, an unavailable GPU, a checkpoint of another
network, ...) is answered with one line saying what is wrong, and a non-zero exit code.
"""
import functools
import re
import sys
from pathlib import Path

import click

DEVICE_PATTERN = re.compile(r"^(cpu|gpu|cuda)(:\d+)?$")
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C


def _known_errors():
    """The library's error types that mean bad input or a stopped run, not a bug in xpnn."""
    from backend import DeviceUnavailableError
    from data import DataError
    from layers import ShapeError
    from nets import ConfigError
    from training.errors import TrainingError
    return (ConfigError, DataError, DeviceUnavailableError, ShapeError, TrainingError, OSError)


def _one_line(error):
    """The error's message on one line; OS errors as 'reason: file'."""
    if isinstance(error, OSError) and error.strerror:
        text = f"{error.strerror}: {error.filename}" if error.filename else error.strerror
    else:
        text = str(error) or type(error).__name__
    return " ".join(text.split())


class CommandGroup(click.Group):
    """The one place where the library's known errors become one-line messages and exit codes."""

    def invoke(self, ctx):
        from training.errors import TrainingInterrupted
        try:
            return super().invoke(ctx)
        except TrainingInterrupted as stop:
            click.echo(_one_line(stop), err=True)
            ctx.exit(128 + stop.signal_number)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(EXIT_INTERRUPTED)
        except BrokenPipeError:  # output piped into `head` and the like: stop quietly
            sys.stderr.close()
            ctx.exit(0)
        except _known_errors() as error:
            raise click.ClickException(_one_line(error)) from None


def _check_device(ctx, param, value):
    if value is not None and not DEVICE_PATTERN.match(value.strip().lower()):
        raise click.BadParameter(f"{value!r}; expected cpu, gpu, cuda or cuda:N")
    return value


def device_option(name="--device", default="cpu", help_text=None):
    return click.option(name, default=default, show_default=True, callback=_check_device,
                        metavar="DEVICE",
                        help=help_text or "where to compute: cpu (NumPy), gpu / cuda / cuda:N (CuPy)")


def _set_fused_kernels(ctx, param, value):
    """--fused-kernels/--array-code set XPNN_FUSED_KERNELS for this process (and the benchmark
    subprocesses it starts); neither given: the variable as set, which must be 0 or 1."""
    from backend.cuda import ENV_FLAG, fused_kernels_setting
    import os
    if value is not None:
        os.environ[ENV_FLAG] = "1" if value else "0"
    try:
        fused_kernels_setting()
    except ValueError as error:
        raise click.BadParameter(str(error)) from None
    return value


fused_option = click.option(
    "--fused-kernels/--array-code", default=None, callback=_set_fused_kernels,
    expose_value=False, is_eager=True,
    help="on a GPU: run the hand-written fused CUDA kernels (experimental), or the array code  "
         "[default: XPNN_FUSED_KERNELS=1 or 0, else array code]")

config_option = click.option(
    "-c", "--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
    help="a YAML config, e.g. configs/lenet.yaml")


@click.group(cls=CommandGroup, context_settings={"help_option_names": ["-h", "--help"]})
def cli():
    """xpnn: train and inspect small convolutional networks on MNIST and Fashion-MNIST,
    on the CPU (NumPy) or a CUDA GPU (CuPy)."""


# -- train ----------------------------------------------------------------------------------------

@cli.command()
@config_option
@device_option()
@fused_option
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="run folder for checkpoints and metrics  [default: runs/<config>-<timestamp>]")
@click.option("--resume", "resume_dir", type=click.Path(path_type=Path),
              help="continue the run in this folder from its last.npz")
@click.option("--epochs", type=int, help="override train.epochs")
@click.option("--batch-size", type=int, help="override train.batch_size")
@click.option("--lr", type=float, help="override train.lr")
@click.option("--seed", type=int, help="override train.seed")
@click.option("--limit-train", type=click.IntRange(min=1),
              help="train on the first N training images only (quick runs, tests)")
@click.option("--limit-test", type=click.IntRange(min=1),
              help="evaluate on the first N test images only (quick runs, tests)")
@click.option("--checkpoint-every", type=click.IntRange(min=0),
              help="also save last.npz every N steps inside an epoch, 0 for never  [default: 200]")
@click.option("--workers", type=click.IntRange(min=1),
              help="CPU threads, each running a slice of every batch  [default: the cores "
                   "this process may use, or the resumed run's]")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              help="read the dataset's IDX files from this folder")
@click.option("--progress/--no-progress", default=True, show_default=True,
              help="show a progress bar on stderr")
def train(config_path, device, out, resume_dir, epochs, batch_size, lr, seed, limit_train,
          limit_test, checkpoint_every, workers, data_dir, progress):
    """Train a network: -c CONFIG for a new run, or --resume RUN_DIR to continue one.

    Each epoch prints one line with train and test loss and accuracy and appends it to
    RUN_DIR/metrics.jsonl; RUN_DIR/last.npz is saved every epoch (and every --checkpoint-every
    steps), RUN_DIR/best.npz at the best test accuracy. Ctrl-C saves last.npz and exits with 130.
    """
    from backend import get_device
    from training import load_config, resume_run, start_run
    from training.runs import default_run_dir

    overrides = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed}
    if resume_dir is not None:
        given = [f"--{name.replace('_', '-')}" for name, value in
                 {**overrides, "out": out, "limit_train": limit_train,
                  "limit_test": limit_test}.items() if value is not None]
        if given:
            raise click.UsageError(f"{', '.join(given)} cannot be combined with --resume: a "
                                   f"resumed run keeps the settings it was started with")
    elif config_path is None:
        raise click.UsageError("give -c CONFIG to start a run, or --resume RUN_DIR to continue one")

    config = load_config(config_path, overrides) if config_path is not None else None
    device = get_device(device)
    if resume_dir is not None:
        trainer = resume_run(resume_dir, device, config=config, data_dir=data_dir,
                             checkpoint_every=checkpoint_every, workers=workers,
                             progress=progress)
        total_epochs = trainer.train_config["epochs"]
        if trainer.epoch >= total_epochs:
            click.echo(f"nothing to do: {resume_dir} has finished all its {total_epochs} epochs")
            return
        click.echo(f"resuming {resume_dir} at epoch {trainer.epoch + 1} step {trainer.step}/"
                   f"{trainer.steps_per_epoch} on {device.name}")
    else:
        trainer = start_run(config, device, out or default_run_dir(config_path),
                            data_dir=data_dir, limit_train=limit_train, limit_test=limit_test,
                            checkpoint_every=200 if checkpoint_every is None else checkpoint_every,
                            workers=workers, progress=progress)
        click.echo(f"run folder {trainer.run_dir}: {trainer.net.name}, "
                   f"{trainer.net.num_parameters():,} parameters, {trainer.train_count} training "
                   f"images, {trainer.steps_per_epoch} steps per epoch, on {device.name}")
    metrics = trainer.fit()
    best = max(metrics, key=lambda record: record["test_acc"])
    click.echo(f"done: best test accuracy {100 * best['test_acc']:.2f}% (epoch {best['epoch']}); "
               f"checkpoints and metrics in {trainer.run_dir}")


# -- evaluate -------------------------------------------------------------------------------------

@cli.command()
@click.argument("checkpoint_path", metavar="CHECKPOINT", type=click.Path(path_type=Path))
@config_option
@device_option()
@fused_option
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              help="read the dataset's IDX files from this folder")
@click.option("--limit-test", type=click.IntRange(min=1), help="use the first N test images only")
def evaluate(checkpoint_path, config_path, device, data_dir, limit_test):
    """Test-set accuracy, loss and confusion matrix of a checkpoint.

    CHECKPOINT is a .npz file or a run folder (its best.npz, else its last.npz). With -c, the
    weights are loaded into the network of CONFIG instead of the one saved with them (a
    checkpoint of another architecture is refused).
    """
    from backend import get_device
    from nets import ConfigError, build
    from training import check_matches, evaluate as run_evaluation, load_checkpoint, restore
    from training.checkpoint import BEST_NAME
    from training.config import load_config, validate_config
    from training.metrics import confusion_matrix, format_confusion
    from training.runs import load_data
    from training.trainer import check_dataset_fits

    if checkpoint_path.is_dir() and (checkpoint_path / BEST_NAME).exists():
        checkpoint_path = checkpoint_path / BEST_NAME
    checkpoint = load_checkpoint(checkpoint_path)
    if config_path is not None:
        config = load_config(config_path)
    else:
        try:
            config = validate_config(checkpoint.config)
        except ConfigError as error:
            raise ConfigError(f"the config saved in {checkpoint.path}: {error}") from None
    device = get_device(device)
    net = build(config["model"], seed=config["train"]["seed"])
    check_matches(net, checkpoint.weights, f"checkpoint {checkpoint.path}")
    net.to(device)
    restore(checkpoint, net)
    dataset = load_data(config, data_dir)
    num_classes = int(config["model"].get("num_classes", 10))
    check_dataset_fits(net, dataset, num_classes)
    images, labels = dataset.test_images[:limit_test], dataset.test_labels[:limit_test]
    result = run_evaluation(net, device.send(images), device.send(labels))
    matrix = confusion_matrix(labels, result.predictions, num_classes)
    correct = int(matrix.trace())
    click.echo(f"{checkpoint.path} ({net.name}, epoch {checkpoint.epoch}) on {dataset.name} test "
               f"set, {len(labels)} images, {device.name}")
    click.echo(f"accuracy: {100 * result.accuracy:.2f}% ({correct}/{len(labels)})")
    click.echo(f"loss: {result.loss:.4f}")
    click.echo("confusion matrix (rows: true class, columns: predicted class):")
    click.echo(format_confusion(matrix, list(dataset.class_names)[:num_classes]))


# -- describe -------------------------------------------------------------------------------------

@cli.command()
@click.option("-c", "--config", "config_path", required=True,
              type=click.Path(dir_okay=False, path_type=Path), help="a YAML config")
def describe(config_path):
    """Print the network of CONFIG and its parameter count."""
    from nets import build
    from training import load_config

    config = load_config(config_path)
    net = build(config["model"], seed=config["train"]["seed"])
    click.echo(repr(net))
    click.echo(f"Total parameters: {net.num_parameters():,}")


# -- plot -----------------------------------------------------------------------------------------

@cli.command()
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="PNG file to write  [default: RUN_DIR/curves.png]")
def plot(run_dir, output):
    """Draw loss and accuracy per epoch from RUN_DIR/metrics.jsonl into a PNG."""
    from training.metrics import METRICS_NAME, read_metrics

    if not (run_dir / METRICS_NAME).is_file():
        raise click.ClickException(f"{run_dir / METRICS_NAME} does not exist: give a run folder "
                                   f"in which at least one epoch has finished")
    try:
        records = read_metrics(run_dir)
    except ValueError as error:
        raise click.ClickException(_one_line(error)) from None
    if not records:
        raise click.ClickException(f"{run_dir / METRICS_NAME} holds no finished epoch yet")
    try:
        import matplotlib
    except ImportError:
        raise click.ClickException("plot needs matplotlib, which is not installed: "
                                   "pip install matplotlib") from None
    matplotlib.use("Agg")
    from matplotlib import pyplot
    from matplotlib.ticker import MaxNLocator

    epochs = [record["epoch"] for record in records]
    figure, (loss_axes, acc_axes) = pyplot.subplots(1, 2, figsize=(10, 4))
    for split in ("train", "test"):
        loss_axes.plot(epochs, [r[f"{split}_loss"] for r in records], marker="o", label=split)
        acc_axes.plot(epochs, [100 * r[f"{split}_acc"] for r in records], marker="o", label=split)
    for axes, label in ((loss_axes, "loss"), (acc_axes, "accuracy (%)")):
        axes.set_xlabel("epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_ylabel(label)
        axes.grid(True, alpha=0.3)
        axes.legend()
    figure.suptitle(run_dir.name)
    figure.tight_layout()
    output = output or run_dir / "curves.png"
    figure.savefig(output, dpi=100)
    pyplot.close(figure)
    click.echo(f"wrote {output}")


# -- bench ----------------------------------------------------------------------------------------

@cli.command()
@click.option("-c", "--config", "config_path", required=True,
              type=click.Path(dir_okay=False, path_type=Path), help="a YAML config")
@device_option()
@fused_option
@click.option("--batch-size", type=click.IntRange(min=1),
              help="images per step  [default: the config's train.batch_size]")
@click.option("--steps", type=click.IntRange(min=1), default=30, show_default=True,
              help="timed steps")
@click.option("--warmup", type=click.IntRange(min=0), default=5, show_default=True,
              help="untimed steps first")
@click.option("--profile", is_flag=True, help="add a per-layer timing table")
def bench(config_path, device, batch_size, steps, warmup, profile):
    """Time full training steps (forward, loss, backward, optimizer step) of CONFIG's network."""
    from backend import get_device
    from training import load_config
    try:
        from training.bench import benchmark
    except ImportError as error:
        raise click.ClickException(f"benchmarking is not available: {error}") from None

    config = load_config(config_path)
    result = benchmark(config, get_device(device), batch_size or config["train"]["batch_size"],
                       steps, warmup, profile)
    click.echo(result.format() if hasattr(result, "format") else str(result))


# -- parity ---------------------------------------------------------------------------------------

@cli.command()
@click.option("-c", "--config", "config_path", required=True,
              type=click.Path(dir_okay=False, path_type=Path), help="a YAML config")
@device_option("--device-a", "cpu", "the reference device")
@device_option("--device-b", "gpu", "the device compared with it")
@fused_option
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True,
              help="test images in the batch")
@click.option("--tolerance", type=float, default=1e-4, show_default=True,
              help="fail if the worst relative error exceeds this")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              help="read the dataset's IDX files from this folder")
def parity(config_path, device_a, device_b, batch_size, tolerance, data_dir):
    """Run one batch through CONFIG's network on two devices and compare every layer's
    forward and backward outputs."""
    from backend import get_device
    from nets import build
    from training import load_config
    from training.batches import to_float
    from training.runs import load_data
    try:
        from backend.parity import compare, format_report, worst
    except ImportError as error:
        raise click.ClickException(f"parity checks are not available: {error}") from None

    config = load_config(config_path)
    get_device(device_a), get_device(device_b)  # an unavailable device fails before any work
    dataset = load_data(config, data_dir)
    inputs = to_float(dataset.test_images[:batch_size])
    labels = dataset.test_labels[:batch_size].copy()
    make_network = functools.partial(build, config["model"], config["train"]["seed"])
    rows = compare(make_network, inputs, labels, a=(device_a, "float32"), b=(device_b, "float32"))
    click.echo(format_report(rows))
    bad = worst(rows)
    if bad is not None and not bad.max_rel_err <= tolerance:
        raise click.ClickException(f"parity fails: worst relative error {bad.max_rel_err:.3g} "
                                   f"({bad.name}, {bad.kind}) exceeds the tolerance {tolerance:g}")


if __name__ == "__main__":
    sys.exit(cli())
