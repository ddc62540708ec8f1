"""`fit`: train from Python in one call, into a run folder as `xpnn train` does, through
`start_run` / `resume_run` and `Trainer.fit` (README: "Training from Python")."""
import copy
import os
from pathlib import Path

import numpy

from xpnn import nets
from xpnn.backend import get_device
from xpnn.data import Dataset
from xpnn.nets.config import ConfigError
from xpnn.nets.description import NoConfigError, loss_settings, model_section
from xpnn.training.checkpoint import LAST_NAME
from xpnn.training.errors import RunFolderError
from xpnn.training.config import (ARRAYS, error_of, find_config, read_config,
                                  validate_config)
from xpnn.training.metrics import best_epoch
from xpnn.training.overrides import Override, apply_overrides, blame
from xpnn.training.runs import default_run_dir, resume_run, start_run

# The train section of a config given as a bare model section (a dict with `layers`).
DEFAULT_TRAIN = {"epochs": 1, "batch_size": 100, "optimizer": "adam", "lr": 0.001}


class History(list):
    """The per-epoch records of a run (metrics.jsonl's, one dict per epoch), with `run_dir`,
    `net` (the network at the end of training: the run's, on its device, or the built network
    given to `fit`, itself) and `best` (the record of the epoch validation chose, whose weights
    are best.npz; None without validation)."""

    def __init__(self, records, run_dir, net):
        super().__init__(records)
        self.run_dir, self.net = Path(run_dir), net
        self.best = best_epoch(records)


def fit(config, train=None, *, validation=None, test=None, epochs=None, batch_size=None,
        lr=None, seed=None, overrides=None, device="cpu", run_dir=None, resume=False,
        resume_from=None, init_from=None, limit_train=None, limit_test=None,
        checkpoint_every=None, workers=None, progress=True, echo=print):
    """Train a network and return its `History`.

    Args:
        config: a config file or shipped name (``"lenet"``), a config mapping ({model, train,
            data}), a bare model section ({name, input_shape, layers, ...}), or a built
            `nets.Network`, trained in place from its own weights (it ends with the last
            epoch's; the run folder keeps its `nets.model_section`). The last two train with
            `DEFAULT_TRAIN` (a network: with its loss layer's label smoothing).
        train: (images, labels): uint8 (N, C, H, W) or (N, H, W) images on the 0-255 scale
            and integer labels (N,); or a `data.Dataset` (its test set is evaluated, its last
            data.validation training images held out); None: the config's dataset.
        validation, test: (images, labels) evaluated after each epoch; `validation` chooses
            best.npz (with arrays and no validation, nothing is held out and no best.npz made).
        epochs, batch_size, lr, seed: the train section's values; `overrides`: any other
            {dotted key: value} (``{"train.schedule.warmup_steps": 10}``).
        device: ``cpu``, ``gpu``, ``cuda:N`` or a `backend.Device`.
        run_dir: the run folder (default: runs/<config name>-<time>); it must not hold a run
            unless `resume`. resume: continue the run in `run_dir` from its last.npz when it
            holds one (else start it there); resume_from: continue that run folder. With
            either, `epochs` beyond the run's extends it.
        init_from: a run folder or .npz whose weights the new run starts from (`start_run`).
        limit_train, limit_test, checkpoint_every, workers: as `xpnn train`'s options.
        progress: the progress bar (stderr); echo: called with each line the command line
            prints (None: silent).
    Raises the library's one-line errors (`ConfigError`, `DataError`, `RunFolderError`, ...)
    before any training when something does not fit, also for a network no config describes.
    """
    device = get_device(device) if isinstance(device, str) else device
    echo = echo or (lambda line: None)
    trainer_echo = None if echo is print else echo  # print: by tqdm.write, beside the bar
    settings = {"train.epochs": epochs, "train.batch_size": batch_size, "train.lr": lr,
                "train.seed": seed, **(overrides or {})}
    dataset, data_settings = _dataset(train, validation, test)
    network = config if isinstance(config, nets.Network) else None
    if network is not None:
        config = _network_config(network, dataset)
        if init_from is not None:
            raise ValueError(f"init_from gives the weights a new run starts from, but "
                             f"{network.name} brings its own: drop init_from, or give fit "
                             f"the config (or model section) instead of the network")
    if resume_from is not None:
        if run_dir is not None and Path(run_dir) != Path(resume_from):
            raise ValueError(f"run_dir {run_dir} and resume_from {resume_from} name two run "
                             f"folders; a resumed run stays in its own folder: give one")
        run_dir, resume = resume_from, True
        if not (Path(run_dir) / LAST_NAME).exists():
            raise FileNotFoundError(f"cannot resume {run_dir}: it holds no {LAST_NAME}")
    checked = _checked_config(config, {**settings, **data_settings})
    if resume and run_dir is None:
        raise ValueError("resume=True continues the run in run_dir: give run_dir (or "
                         "resume_from=RUN)")
    if run_dir is None:
        run_dir = default_run_dir(_name_of(config))
    run_dir = Path(run_dir)
    if not resume and (run_dir / LAST_NAME).exists():
        raise RunFolderError(f"{run_dir} already holds a training run ({LAST_NAME}); continue it "
                             f"with resume=True, or give another run_dir")
    resuming = resume and (run_dir / LAST_NAME).exists()
    if resuming and init_from is not None:
        raise ValueError(f"init_from starts a new run, but {run_dir} holds one to resume: drop "
                         f"init_from, or give another run_dir")
    if resuming:
        trainer = resume_run(run_dir, device, config=checked, dataset=dataset,
                             checkpoint_every=checkpoint_every, workers=workers,
                             progress=progress, echo=trainer_echo, epochs=epochs)
        echo(f"nothing to do: {run_dir} {finished_what(trainer)}" if trainer.finished else
             f"resuming {run_dir} at epoch {trainer.epoch + 1} step {trainer.step}/"
             f"{trainer.steps_per_epoch} on {device.name}")
    else:
        trainer = start_run(checked, device, run_dir, dataset=dataset, limit_train=limit_train,
                            limit_test=limit_test, checkpoint_every=checkpoint_every,
                            workers=workers, progress=progress, echo=trainer_echo,
                            init_from=init_from)
        if network is not None:  # rank 0's weights on every rank, as init_from's are
            trainer.net.load_state_dict(trainer.ranks.on_root(network.state_dict))
        echo(start_line(trainer, device.name))
    finished = trainer.finished
    records = trainer.fit()
    if not finished:
        echo(done_line(records, trainer.run_dir))
    if network is not None:
        network.load_state_dict(trainer.net.state_dict())
    return History(records, trainer.run_dir, trainer.net if network is None else network)


def finished_what(trainer):
    """How a finished run ended: all its epochs trained, or stopped early."""
    if trainer.early_stopping.stopped:
        return (f"stopped early after epoch {trainer.epoch} of "
                f"{trainer.train_config['epochs']} (train.early_stopping)")
    return f"has finished all its {trainer.train_config['epochs']} epochs"


def start_line(trainer, where):
    """The line that starts a new run: its folder, network and sizes."""
    return (f"run folder {trainer.run_dir}: {trainer.net.name}, "
            f"{trainer.net.num_parameters():,} parameters, {trainer.train_count} training "
            f"images, {trainer.steps_per_epoch} steps per epoch, on {where}")


def done_line(records, run_dir):
    """The line that ends a run: the last epoch's test accuracy, the epoch validation chose."""
    last, best = records[-1], best_epoch(records)
    tested = (f"last epoch test accuracy {100 * last['test_acc']:.2f}%"
              if last.get("test_acc") is not None else "no test set")
    if best is None:
        chosen = "no validation set, so no best.npz"
    else:
        test = ("" if best.get("test_acc") is None else
                f", test {100 * best['test_acc']:.2f}%")
        chosen = (f"validation chose epoch {best['epoch']} (val {100 * best['val_acc']:.2f}%"
                  f"{test}) for best.npz")
    return f"done: {tested}; {chosen}; checkpoints and metrics in {run_dir}"


def _name_of(config):
    if isinstance(config, (str, os.PathLike)):
        return Path(config).stem
    return str(config.get("model", config).get("name", "fit"))


def _network_config(network, dataset):
    """The config mapping `fit` trains the built `network` with: its model section and
    `DEFAULT_TRAIN` with its loss layer's label smoothing; `ConfigError` or `ValueError`, in
    one line, for a network that no config describes."""
    try:
        model = model_section(network, dataset.image_shape if dataset is not None else None)
        label_smoothing = loss_settings(network)
    except NoConfigError as error:
        raise NoConfigError(f"fit cannot train {network.name} into a run folder, which keeps "
                            f"the config that rebuilds it: {error}; build it from those layers, "
                            f"or train it with a loop of your own (forward_loss, backward, an "
                            f"optimizer's step)") from None
    except ConfigError as error:
        raise ConfigError(f"fit cannot train {network.name}: {error}") from None
    dtypes = sorted({str(parameter.dtype) for parameter in network.parameters()} - {"float32"})
    if dtypes:
        raise ValueError(f"fit trains float32 weights, but {network.name}'s are "
                         f"{', '.join(dtypes)}: call network.to(dtype='float32') first")
    return {"model": model, "train": {**DEFAULT_TRAIN, **label_smoothing}}


def _checked_config(config, settings):
    """The checked config of `fit`'s `config` with `settings` ({dotted key: value}) set."""
    if isinstance(config, (str, os.PathLike)):
        path = find_config(config)
        raw, source = read_config(path), str(path)
    elif isinstance(config, dict):
        raw = copy.deepcopy(config)
        if "model" not in raw and "layers" in raw:
            raw = {"model": raw, "train": dict(DEFAULT_TRAIN)}
        source = "the config given to fit"
    else:
        raise TypeError(f"fit takes a config file, a shipped config name, a config mapping or "
                        f"a nets.Network, got {type(config).__name__}")
    changes = [Override(key, value, f"{key}={value!r}") for key, value in settings.items()
               if value is not None]
    try:
        return validate_config(apply_overrides(raw, changes))
    except ConfigError as error:
        raise blame(error, changes, source, lambda: error_of(raw)) from None


def _dataset(train, validation, test):
    """(a `Dataset` or None, {dotted key: value} the data section must hold) for `fit`'s data."""
    if train is None:
        if validation is not None or test is not None:
            raise ValueError("validation and test are given beside train images; with "
                             "train=None the config's dataset supplies all three")
        return None, {}
    if isinstance(train, Dataset):
        if test is not None:
            raise ValueError("test is given beside a Dataset, which holds its own test set")
        if validation is None:
            return train, {"data.dataset": ARRAYS}
        images, labels = _arrays("validation", validation, train.image_shape)
        joined = Dataset(train.name, numpy.concatenate([train.train_images, images]),
                         numpy.concatenate([train.train_labels, labels]), train.test_images,
                         train.test_labels, train.num_classes, train.class_names)
        return joined, {"data.dataset": ARRAYS, "data.validation": len(labels)}
    images, labels = _arrays("train", train)
    val_images, val_labels = _arrays("validation", validation, images.shape[1:])
    test_images, test_labels = _arrays("test", test, images.shape[1:])
    every = numpy.concatenate([labels, val_labels, test_labels])
    classes = int(every.max()) + 1 if len(every) else 0
    dataset = Dataset(ARRAYS, numpy.concatenate([images, val_images]),
                      numpy.concatenate([labels, val_labels]), test_images, test_labels,
                      classes, tuple(str(number) for number in range(classes)))
    return dataset, {"data.dataset": ARRAYS, "data.validation": len(val_labels)}


def _arrays(name, pair, shape=None):
    """(uint8 (N, C, H, W) images, int64 (N,) labels) of `fit`'s `name` argument, checked;
    None: no images of `shape`."""
    if pair is None:
        return numpy.zeros((0, *shape), numpy.uint8), numpy.zeros(0, numpy.int64)
    if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
        raise TypeError(f"{name} must be a pair (images, labels) of arrays, got "
                        f"{type(pair).__name__}")
    images, labels = numpy.asarray(pair[0]), numpy.asarray(pair[1])
    if images.ndim == 3:
        images = images[:, None]
    if images.ndim != 4:
        raise ValueError(f"{name} images must be (N, C, H, W) or (N, H, W), got shape "
                         f"{images.shape}")
    if shape is not None and images.shape[1:] != tuple(shape):
        raise ValueError(f"{name} images are of shape {images.shape[1:]} each, but the training "
                         f"images are {tuple(shape)}")
    if images.dtype != numpy.uint8:
        if images.dtype.kind not in "iu" or (images.size and (images.min() < 0
                                                               or images.max() > 255)):
            scale = (f"values from {images.min():g} to {images.max():g}"
                     if images.size and images.dtype.kind in "iuf" else "")
            hint = (" (for floats on the [0, 1] scale give (images * 255).round()"
                    ".astype('uint8'))" if images.dtype.kind == "f" else "")
            raise ValueError(f"{name} images must be uint8 (or integers) on the 0-255 scale, as "
                             f"training keeps them; got {images.dtype} {scale}{hint}")
        images = images.astype(numpy.uint8)
    if labels.ndim != 1 or len(labels) != len(images):
        raise ValueError(f"{name} labels must be one per image, shape ({len(images)},), got "
                         f"shape {labels.shape}")
    if labels.dtype.kind not in "iu":
        raise ValueError(f"{name} labels must be integers (class numbers), got {labels.dtype}")
    if len(labels) and labels.min() < 0:
        raise ValueError(f"{name} labels must be class numbers >= 0, got {labels.min()}")
    return numpy.ascontiguousarray(images), labels.astype(numpy.int64)
