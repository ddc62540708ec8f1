"""Class probabilities of a trained network for new images, printed or written as CSV."""
import csv
import re
from dataclasses import dataclass
from pathlib import Path

import numpy

from xpnn.backend import CPU, device_of
from xpnn.data import DATASETS
from xpnn.inference.images import PREPARATIONS, ImageError, InputImage, read_images
from xpnn.training.batches import to_float
from xpnn.training.files import atomic_write

BATCH_SIZE = 256


@dataclass
class Prediction(InputImage):
    """An `InputImage` (what the network was given) and its `probabilities`, (classes,) float64
    summing to 1."""
    probabilities: numpy.ndarray = None

    def top(self, count):
        """[(class index, probability)] of the `count` likeliest classes, likeliest first."""
        order = numpy.argsort(-self.probabilities, kind="stable")[:count]
        return [(int(index), float(self.probabilities[index])) for index in order]


def class_probabilities(net, images, batch_size=BATCH_SIZE):
    """Softmax of `net`'s logits (in float64, on the host) for uint8 `images` (N, C, H, W),
    computed on the network's device."""
    device = device_of(net.parameters()[0].data)
    rows = []
    for start in range(0, len(images), batch_size):
        batch = to_float(device.send(images[start:start + batch_size]))
        logits = CPU.to_numpy(net.forward(batch)).astype(numpy.float64)
        shifted = numpy.exp(logits - logits.max(axis=1, keepdims=True))
        rows.append(shifted / shifted.sum(axis=1, keepdims=True))
    return numpy.concatenate(rows)


def predict(trained, sources):
    """A `Prediction` for every image in `sources` (files, folders, IDX files), made into the
    input of `trained` (a `training.runs.TrainedNetwork`) as its dataset's images were made."""
    channels, *size = trained.net.input_shape
    if channels != 1 or len(size) != 2:
        raise ImageError(f"predict takes networks of one-channel images; {trained.net.name} "
                         f"takes input_shape {trained.net.input_shape}")
    dataset = trained.config["data"]["dataset"]
    images = read_images(sources, tuple(size), PREPARATIONS.get(dataset, PREPARATIONS["mnist"]))
    pixels = numpy.stack([image.pixels for image in images])[:, None]
    probabilities = class_probabilities(trained.net, pixels)
    return [Prediction(image.name, image.pixels, image.inverted, row)
            for image, row in zip(images, probabilities)]


def inputs_folder(folder):
    """`folder` as a `Path`, made if needed; `ImageError` if it cannot be."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ImageError(f"--save-inputs {folder}: cannot make the folder there "
                         f"({error.strerror or error})") from None
    return folder


def save_inputs(predictions, folder):
    """Write what the network saw for each prediction as a PNG into `folder` (made if needed):
    ``0001_photo.png``, ``0002_t10k-images-idx3-ubyte_5.png``, ... numbered in order; returns
    the paths. `ImageError` if the folder cannot be made."""
    from PIL import Image
    folder = inputs_folder(folder)
    paths, width = [], max(4, len(str(len(predictions))))
    for number, prediction in enumerate(predictions, start=1):
        stem = re.sub(r"[^\w.-]+", "_", Path(prediction.name).name.removesuffix("]"))
        stem = Path(stem).stem if "[" not in Path(prediction.name).name else stem
        path = folder / f"{number:0{width}d}_{stem}.png"
        Image.fromarray(prediction.pixels).save(path)
        paths.append(path)
    return paths


def class_names(config):
    """The names of the classes of a config's dataset (digits for MNIST); their numbers for a
    dataset that names none (an idx folder, arrays given to `xpnn.fit`)."""
    dataset = config["data"]["dataset"]
    names = DATASETS[dataset].class_names if dataset in DATASETS else ()
    count = config["model"]["num_classes"]
    return [names[i] if i < len(names) else str(i) for i in range(count)]


def format_prediction(prediction, names, top=3):
    """``photo.png: 7 (7 98.91%, 1 0.62%, 9 0.21%), inverted``."""
    best = prediction.top(top)
    ranked = ", ".join(f"{names[index]} {100 * p:.2f}%" for index, p in best)
    note = ", inverted (dark on light)" if prediction.inverted else ""
    return f"{prediction.name}: {names[best[0][0]]} ({ranked}){note}"


def write_csv(predictions, path, names, top=3):
    """One row per image: file, class, probability, class_2, probability_2, ..., inverted."""
    header = ["file", "class", "probability",
              *(f"{key}_{rank}" for rank in range(2, top + 1) for key in ("class", "probability")),
              "inverted"]

    def write(handle):
        writer = csv.writer(handle)
        writer.writerow(header)
        for prediction in predictions:
            row = [prediction.name]
            for index, p in prediction.top(top):
                row += [names[index], f"{p:.6f}"]
            row.append("" if prediction.inverted is None else str(prediction.inverted).lower())
            writer.writerow(row)

    atomic_write(path, write, binary=False)
