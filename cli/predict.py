"""`xpnn predict`: the class of each of your images, by a trained network."""
from pathlib import Path

import click

from xpnn.cli.options import command_mode, device_option, mode_options, output_option


@click.command()
@click.argument("source", metavar="RUN_DIR|CHECKPOINT", type=click.Path(path_type=Path))
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@device_option()
@mode_options(graph=False)
@click.option("--top", type=click.IntRange(min=1), default=3, show_default=True,
              help="how many of the likeliest classes to show")
@output_option("also write the predictions to this CSV file (file, class, probability, ...)")
@click.option("--save-inputs", type=click.Path(path_type=Path), metavar="DIR",
              help="write the images the network sees (28 x 28 PNGs, numbered in order) here")
def predict(source, images, device, array_code, top, output, save_inputs):
    """Classify IMAGES with the network of RUN_DIR (its best.npz, else last.npz) or CHECKPOINT.

    IMAGES are PNG or JPEG files (or any image Pillow reads), folders of them, or IDX files.
    Each picture is made into a 28 x 28 input as MNIST's were (grayscale, light on dark, the
    strokes fitted into 20 x 20 and centred by their centre of mass); IDX images are taken as
    they are; --save-inputs DIR shows what the network saw. Prints each image's class and the
    probabilities of the likeliest classes.
    """
    from xpnn.backend import get_device, running_on
    from xpnn.inference import predict as run_predict
    from xpnn.inference.predict import (class_names, format_prediction, inputs_folder,
                                        save_inputs as save, write_csv)
    from xpnn.training.runs import load_trained

    device = get_device(device)
    if save_inputs is not None:
        inputs_folder(save_inputs)  # a folder that cannot be made fails before any work
    trained = load_trained(source, device)
    names = class_names(trained.config)
    top = min(top, len(names))
    with running_on(device, command_mode(device, array_code=array_code)):
        predictions = run_predict(trained, images)
    for prediction in predictions:
        click.echo(format_prediction(prediction, names, top))
    if output is not None:
        write_csv(predictions, output, names, top)
        click.echo(f"wrote {output}")
    if save_inputs is not None:
        save(predictions, save_inputs)
        click.echo(f"wrote the {len(predictions)} network inputs to {save_inputs}")
