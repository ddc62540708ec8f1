"""`xpnn evaluate`: test-set accuracy, loss and confusion matrix of a trained network."""
from pathlib import Path

import click

from xpnn.cli.options import (config_option, data_dir_option, device_option, fused_option,
                              load_config, set_option)


@click.command()
@click.argument("source", metavar="RUN_DIR|CHECKPOINT", type=click.Path(path_type=Path))
@config_option()
@set_option
@device_option()
@fused_option
@data_dir_option()
@click.option("--limit-test", type=click.IntRange(min=1), help="use the first N test images only")
def evaluate(source, config_spec, overrides, device, fused, data_dir, limit_test):
    """Test-set accuracy, loss and confusion matrix of a trained network.

    RUN_DIR|CHECKPOINT is a run folder (its best.npz, else its last.npz) or a .npz file. With -c,
    the weights are loaded into the network of CONFIG instead of the one saved with them (a
    checkpoint of another architecture is refused).
    """
    from xpnn.backend import fused_on, get_device
    from xpnn.training import evaluate as run_evaluation
    from xpnn.training.metrics import confusion_matrix, format_confusion
    from xpnn.training.runs import load_data, load_trained
    from xpnn.training.trainer import check_dataset_fits

    if overrides and config_spec is None:
        raise click.UsageError("--set changes a config given with -c; add -c CONFIG")
    config = load_config(config_spec, overrides) if config_spec is not None else None
    device = get_device(device)
    trained = load_trained(source, device, config)
    net, config, checkpoint = trained.net, trained.config, trained.checkpoint
    dataset = load_data(config, data_dir)
    num_classes = int(config["model"].get("num_classes", 10))
    check_dataset_fits(net, dataset, num_classes)
    images, labels = dataset.test_images[:limit_test], dataset.test_labels[:limit_test]
    with fused_on(device, fused):
        result = run_evaluation(net, device.send(images), device.send(labels))
    matrix = confusion_matrix(labels, result.predictions, num_classes)
    correct = int(matrix.trace())
    click.echo(f"{checkpoint.path} ({net.name}, epoch {checkpoint.epoch}) on {dataset.name} test "
               f"set, {len(labels)} images, {device.name}")
    click.echo(f"accuracy: {100 * result.accuracy:.2f}% ({correct}/{len(labels)})")
    click.echo(f"loss: {result.loss:.4f}")
    click.echo("confusion matrix (rows: true class, columns: predicted class):")
    click.echo(format_confusion(matrix, list(dataset.class_names)[:num_classes]))
