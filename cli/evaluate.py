"""`xpnn evaluate`: test-set accuracy, loss and confusion matrix of a trained network."""
import json
import math
from pathlib import Path

import click

from xpnn.cli.options import (command_mode, config_option, data_dir_option, device_option,
                              load_config, mode_options, output_option, set_option)


@click.command()
@click.argument("source", metavar="RUN_DIR|CHECKPOINT", type=click.Path(path_type=Path))
@config_option()
@set_option
@device_option()
@mode_options(graph=False)
@data_dir_option
@click.option("--limit-test", type=click.IntRange(min=1), help="use the first N test images only")
@click.option("--json", "as_json", is_flag=True,
              help="print one JSON object (checkpoint, accuracy, loss, confusion matrix, ...) "
                   "instead of the text")
@output_option("also write the report as that JSON object to this file")
def evaluate(source, config_spec, overrides, device, array_code, data_dir, limit_test, as_json,
             output):
    """Test-set accuracy, loss and confusion matrix of a trained network.

    RUN_DIR|CHECKPOINT is a run folder (its best.npz, else its last.npz) or a .npz file. With -c,
    the weights are loaded into the network of CONFIG instead of the one saved with them (a
    checkpoint of another architecture is refused). --json prints the report as one JSON
    object (the confusion matrix as a list of rows, true class first); -o FILE writes it to FILE.
    """
    from xpnn.backend import get_device, running_on
    from xpnn.training.metrics import format_confusion
    from xpnn.training.runs import evaluate_trained

    if overrides and config_spec is None:
        raise click.UsageError("--set changes a config given with -c; add -c CONFIG")
    config = load_config(config_spec, overrides) if config_spec is not None else None
    device = get_device(device)
    with running_on(device, command_mode(device, array_code=array_code)):
        report = evaluate_trained(source, device, config, data_dir, limit_test)
    checkpoint, net = report.trained.checkpoint, report.trained.net
    correct = int(report.confusion.trace())
    names = [str(name) for name in list(report.dataset.class_names)[:report.confusion.shape[0]]]
    record = {"checkpoint": str(checkpoint.path), "network": net.name, "epoch": checkpoint.epoch,
              "dataset": report.dataset.name, "images": report.count, "device": report.device,
              "accuracy": report.accuracy, "correct": correct,
              "loss": report.loss if math.isfinite(report.loss) else str(report.loss),
              "class_names": names, "confusion": report.confusion.tolist()}
    if output is not None:
        from xpnn.training.files import atomic_write
        text = json.dumps(record, indent=1) + "\n"
        atomic_write(output, lambda handle: handle.write(text), binary=False)
    if as_json:
        click.echo(json.dumps(record))
        return
    click.echo(f"{checkpoint.path} ({net.name}, epoch {checkpoint.epoch}) on {report.dataset.name} "
               f"test set, {report.count} images, {report.device}")
    click.echo(f"accuracy: {100 * report.accuracy:.2f}% ({correct}/{report.count})")
    click.echo(f"loss: {report.loss:.4f}")
    click.echo("confusion matrix (rows: true class, columns: predicted class):")
    click.echo(format_confusion(report.confusion, names))
    if output is not None:
        click.echo(f"wrote {output}")
