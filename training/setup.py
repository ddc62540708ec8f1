"""Run setup: the network, what computes its steps, its optimizer, its data on the device and the
step that trains it, each checked before any work."""
from dataclasses import dataclass

from xpnn import layers, nets
from xpnn.backend import available_bytes, cpu_count, format_bytes, set_blas_threads
from xpnn.backend.communicator import Ranks
from xpnn.data import DataError, hold_out
from xpnn.nets import ConfigError
from xpnn.optim import Schedule, make_optimizer
from xpnn.training.augment import Augmentation
from xpnn.training.batches import num_batches
from xpnn.training.captured_step import CapturedStep
from xpnn.training.errors import TrainingError
from xpnn.training.metrics import RunningStats
from xpnn.training.step import TrainingStep


def check_dataset_fits(net, dataset, num_classes):
    """Raise `DataError` unless the images have the network's input shape and every label is a
    class the network has."""
    image_shape = tuple(dataset.train_images.shape[1:])
    if net.input_shape is not None and image_shape != tuple(net.input_shape):
        raise DataError(f"dataset {dataset.name!r} has images of shape {image_shape}, but the "
                        f"network {net.name!r} takes input_shape {tuple(net.input_shape)}")
    for split in ("train", "test"):
        labels = getattr(dataset, f"{split}_labels")
        if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
            raise DataError(f"dataset {dataset.name!r} has {split} labels from {labels.min()} to "
                            f"{labels.max()}, but the network gives {num_classes} class scores, "
                            f"so labels must lie in [0, {num_classes - 1}]; set model.num_classes "
                            f"and the last layer's out_features to match")


def check_memory_fits(net, batch_size, device, dataset_bytes=0):
    """Raise `ConfigError` unless a training step of `batch_size` images (with the weights,
    their gradients and momentum, and `dataset_bytes` of data) surely fits in `device`'s memory
    (counting only what a step cannot do without: every layer's output, kept for backward)."""
    itemsize = device.xp.dtype(net.parameters()[0].dtype).itemsize
    per_image = net.stored_values_per_image() * itemsize
    needed = batch_size * per_image + 3 * net.num_parameters() * itemsize + dataset_bytes
    available = available_bytes(device)
    if needed > available:
        raise ConfigError(
            f"train.batch_size {batch_size:,} does not fit: a training step on {device.name} "
            f"needs at least {format_bytes(needed)} ({format_bytes(per_image)} of layer outputs "
            f"per image) but {format_bytes(available)} is available; use a smaller batch size")


def build_network(config):
    """The config's network (weights drawn from train.seed) with its training loss."""
    train = config["train"]
    net = nets.build(config["model"], seed=train["seed"])
    net.loss_layer = layers.SoftmaxCrossEntropyLossLayer(train["label_smoothing"])
    return net


def build_model(net, config, device, batch_size, *, dataset_bytes=0, workers=None, ranks=None,
                lr=None):
    """(model, optimizer, workers) for `net` (`build_network`), moved to `device` after a memory
    check for steps of `batch_size` images (and `dataset_bytes` of data): what computes its
    steps and the config's optimizer (at rate `lr`, None: the config's), every rank starting
    from rank 0's weights. `workers`: CPU threads that each run a slice of every batch
    (`nets.DataParallel`; None: this host's share of the cores; 0: the bare network with BLAS
    on every core); 1 on a GPU."""
    ranks = ranks if ranks is not None else Ranks()
    check_memory_fits(net, batch_size, device, dataset_bytes)
    net.to(device)
    optimizer = make_optimizer(config["train"], net.parameters(), lr)
    ranks.broadcast(optimizer.data)
    if workers is None:
        workers = 1 if device.is_gpu else max(1, cpu_count() // ranks.local_size)
    if workers > 1 and device.is_gpu:
        raise TrainingError(f"workers={workers} splits batches over CPU threads; on "
                            f"{device.name} use workers=1")
    model = nets.DataParallel(net, workers) if workers and not device.is_gpu else net
    if not workers and not device.is_gpu:
        set_blas_threads(cpu_count())
    return model, optimizer, workers


def make_schedule(train_config, steps_per_epoch):
    """The learning rate at each fractional epoch (`optim.Schedule`) of a train section, for a
    run of `steps_per_epoch` steps per epoch (a warm-up may be given in steps)."""
    options = {key: value for key, value in train_config["schedule"].items() if key != "name"}
    return Schedule(train_config["schedule"]["name"], train_config["lr"], train_config["epochs"],
                    steps_per_epoch=steps_per_epoch, **options)


@dataclass
class RunSetup:
    """What a training run computes with: `build_model`'s three; `step` on the device uint8
    `train_images`, adding to `stats`; `run_step`, what each step calls (`step`, or it as a CUDA
    graph); `evaluated`: {"validation" | "test": (device images, device labels)}, the non-empty
    ones; `augment` None: none."""
    net: object
    model: object
    optimizer: object
    workers: int
    step: TrainingStep
    run_step: object
    stats: RunningStats
    train_images: object
    evaluated: dict
    train_count: int
    steps_per_epoch: int
    schedule: Schedule
    augment: Augmentation


def set_up(config, dataset, device, *, ranks, limit_train=None, limit_test=None, workers=None,
           graph=False):
    """The `RunSetup` of `config` on `dataset` (a `data.Dataset`, its last `data.validation`
    training images held out), the first `limit_train` and `limit_test` images used; `graph`:
    each step a CUDA graph. Call it in the run's mode (`backend.running_on`). Raises
    `DataError`, `ConfigError` or `TrainingError` naming what does not fit."""
    batch_size = config["train"]["batch_size"]
    net = build_network(config)
    check_dataset_fits(net, dataset, config["model"]["num_classes"])
    split = hold_out(dataset, config["data"]["validation"])
    train_images, train_labels = split.train_images[:limit_train], split.train_labels[:limit_train]
    evaluated = {"validation": (split.validation_images[:limit_test],
                                split.validation_labels[:limit_test]),
                 "test": (dataset.test_images[:limit_test], dataset.test_labels[:limit_test])}
    dataset_bytes = sum(array.nbytes for array in (train_images, train_labels,
                                                  *evaluated["validation"], *evaluated["test"]))
    rank_batch = -(-min(batch_size, len(train_labels)) // ranks.size)
    model, optimizer, workers = build_model(net, config, device, rank_batch, workers=workers,
                                            dataset_bytes=dataset_bytes, ranks=ranks)
    train_count = len(train_labels)
    steps = num_batches(train_count, batch_size)
    smallest_batch = min(train_count, batch_size, train_count % batch_size or train_count)
    if smallest_batch < ranks.size:
        raise TrainingError(
            f"{ranks.size} ranks cannot share a batch of {smallest_batch} training image(s) "
            f"(the epoch's {'only' if steps == 1 else 'last'} batch); use fewer ranks, or a "
            f"batch size and image count that leave every batch at least {ranks.size} images")
    images, stats = device.send(train_images), RunningStats(device.xp)
    step = TrainingStep(model, optimizer, images, device.send(train_labels), stats, ranks)
    return RunSetup(net, model, optimizer, workers, step,
                    CapturedStep(step) if graph else step, stats, images,
                    {name: (device.send(images), device.send(labels))
                     for name, (images, labels) in evaluated.items() if len(labels)},
                    train_count, steps, make_schedule(config["train"], steps),
                    Augmentation.from_config(config["data"]["augment"]))
