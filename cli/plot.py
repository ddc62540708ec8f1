"""`xpnn plot`: loss and accuracy curves of a run, as a PNG."""
from pathlib import Path

import click

from xpnn.cli.options import one_line, output_option


@click.command()
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@output_option("PNG file to write  [default: RUN_DIR/curves.png]")
def plot(run_dir, output):
    """Draw loss and accuracy per epoch (train, validation, test) from RUN_DIR/metrics.jsonl into
    a PNG, marking the epoch that validation chose for best.npz."""
    from xpnn.training.metrics import METRICS_NAME, best_epoch, read_metrics

    if not (run_dir / METRICS_NAME).is_file():
        raise click.ClickException(f"{run_dir / METRICS_NAME} does not exist: give a run folder "
                                   f"in which at least one epoch has finished")
    try:
        records = read_metrics(run_dir)
    except ValueError as error:
        raise click.ClickException(one_line(error)) from None
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
    for key, label in (("train", "train"), ("val", "validation"), ("test", "test")):
        if any(r.get(f"{key}_acc") is None for r in records):
            continue  # no validation set (or a run from before there was one)
        loss_axes.plot(epochs, [r[f"{key}_loss"] for r in records], marker="o", label=label)
        acc_axes.plot(epochs, [100 * r[f"{key}_acc"] for r in records], marker="o", label=label)
    chosen = best_epoch(records)
    if chosen is not None:
        for axes in (loss_axes, acc_axes):
            axes.axvline(chosen["epoch"], color="grey", linestyle=":",
                         label=f"chosen on validation (epoch {chosen['epoch']})")
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
