"""`xpnn plot`: loss and accuracy curves of a run, and its test confusion matrix, as PNGs."""
from pathlib import Path

import click

from xpnn.cli.options import device_option, one_line, output_option


@click.command()
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@output_option("PNG file to write  [default: RUN_DIR/curves.png]")
@click.option("--confusion", is_flag=True,
              help="also evaluate the run's network (best.npz, else last.npz) on its test set "
                   "and draw the confusion matrix into RUN_DIR/confusion.png")
@device_option()
def plot(run_dir, output, confusion, device):
    """Draw loss and accuracy per epoch (train, validation, test) from RUN_DIR/metrics.jsonl into
    a PNG, marking the epoch that validation chose for best.npz; epochs are whole-number ticks."""
    from xpnn.training.metrics import METRICS_NAME, read_metrics

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

    _save(pyplot, draw_curves(pyplot, records, run_dir.name), output or run_dir / "curves.png")
    if confusion:
        from xpnn.backend import get_device, running_on
        from xpnn.training.runs import evaluate_trained
        device = get_device(device)
        with running_on(device):
            report = evaluate_trained(run_dir, device)
        names = [str(name) for name in report.dataset.class_names][:report.confusion.shape[0]]
        checkpoint = report.trained.checkpoint
        title = (f"{run_dir.name}: {checkpoint.path.name} (epoch {checkpoint.epoch}), "
                 f"{100 * report.accuracy:.2f}% of {report.count} test images")
        _save(pyplot, draw_confusion(pyplot, report.confusion, names, title),
              run_dir / "confusion.png")


def _save(pyplot, figure, path):
    figure.savefig(path, dpi=100)
    pyplot.close(figure)
    click.echo(f"wrote {path}")


def draw_curves(pyplot, records, title):
    """The loss and accuracy figure of epoch `records` (metrics.jsonl's)."""
    from matplotlib.ticker import MaxNLocator
    from xpnn.training.metrics import best_epoch

    epochs = [record["epoch"] for record in records]
    figure, (loss_axes, acc_axes) = pyplot.subplots(1, 2, figsize=(10, 4))
    for key, label in (("train", "train"), ("val", "validation"), ("test", "test")):
        if any(r.get(f"{key}_acc") is None for r in records):
            continue  # no validation set
        loss_axes.plot(epochs, [r[f"{key}_loss"] for r in records], marker="o", label=label)
        acc_axes.plot(epochs, [100 * r[f"{key}_acc"] for r in records], marker="o", label=label)
    chosen = best_epoch(records)
    for axes, label in ((loss_axes, "loss"), (acc_axes, "accuracy (%)")):
        if chosen is not None:
            axes.axvline(chosen["epoch"], color="grey", linestyle=":",
                         label=f"chosen on validation (epoch {chosen['epoch']})")
        axes.set(xlabel="epoch", ylabel=label)
        # min_n_ticks=1: with fewer than two epochs in view the default falls back to fractions
        axes.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        if len(epochs) == 1:
            axes.set_xlim(epochs[0] - 0.5, epochs[0] + 0.5)
        axes.grid(True, alpha=0.3)
        axes.legend()
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def draw_confusion(pyplot, matrix, names, title):
    """A (classes x classes) count `matrix` (rows: true class) as a labelled heat map."""
    size = len(names)
    figure, axes = pyplot.subplots(figsize=(1.2 + 0.55 * size, 1.0 + 0.5 * size))
    image = axes.imshow(matrix, cmap="Blues")
    figure.colorbar(image, ax=axes)
    axes.set_xticks(range(size), [name[:10] for name in names], rotation=45, ha="right")
    axes.set_yticks(range(size), [name[:10] for name in names])
    axes.set(xlabel="predicted class", ylabel="true class")
    half = matrix.max() / 2
    for row in range(size):
        for column in range(size):
            axes.text(column, row, str(int(matrix[row, column])), ha="center", va="center",
                      fontsize=8, color="white" if matrix[row, column] > half else "black")
    axes.set_title(title, fontsize=9)
    figure.tight_layout()
    return figure
