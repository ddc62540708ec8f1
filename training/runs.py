"""Run folders: start a new training run, resume one, or load the network it trained. A run
folder holds last.npz, best.npz, metrics.jsonl (see the README) and config.yaml (the config
after command-line overrides, for people to read; the checkpoints carry their own copy)."""
import json
import shlex
import time
from dataclasses import dataclass
from pathlib import Path

import numpy
import yaml

from xpnn import nets
from xpnn.backend import get_device
from xpnn.backend.communicator import world
from xpnn.data import load_dataset
from xpnn.nets.config import ConfigError
from xpnn.training.checkpoint import (BEST_NAME, LAST_NAME, Checkpoint, check_matches,
                                      load_checkpoint, restore)
from xpnn.training.config import ARRAYS, validate_config
from xpnn.training.errors import CheckpointError, RunFolderError
from xpnn.training.files import (LOCK_NAME, FolderBusyError, FolderLock, atomic_write,
                                 probe_writable, remove_stale_temporaries)
from xpnn.training.metrics import confusion_matrix, evaluate, write_metrics
from xpnn.training.setup import check_dataset_fits
from xpnn.training.trainer import CHECKPOINT_EVERY, Trainer

CONFIG_COPY_NAME = "config.yaml"
WEIGHT_BOUND = 1e6  # no weight of a trained network comes near; a diverged run's pass it


@dataclass
class TrainedNetwork:
    """A network with a checkpoint's weights: `net` (on its device), its checked `config`, and
    the `checkpoint` it came from."""
    net: nets.Network
    config: dict
    checkpoint: Checkpoint


@dataclass
class TestReport:
    """How a trained network does on a test set: `accuracy` (a fraction), mean `loss`,
    `confusion` (classes x classes host int64 counts, rows the true class), over `count` images
    of `dataset` (a `data.Dataset`), on `device`."""
    trained: TrainedNetwork
    dataset: object
    device: str
    count: int
    accuracy: float
    loss: float
    confusion: object


def evaluate_trained(source, device="cpu", config=None, data_dir=None, limit_test=None):
    """A `TestReport` of the network in `source` (see `load_trained`) on its dataset's test set
    (the first `limit_test` images; `data_dir` overrides where the data are read from)."""
    device = get_device(device)
    trained = load_trained(source, device, config)
    dataset = load_data(trained.config, data_dir)
    num_classes = trained.config["model"]["num_classes"]
    check_dataset_fits(trained.net, dataset, num_classes)
    images, labels = dataset.test_images[:limit_test], dataset.test_labels[:limit_test]
    result = evaluate(trained.net, device.send(images), device.send(labels))
    return TestReport(trained, dataset, device.name, len(labels), result.accuracy, result.loss,
                      confusion_matrix(labels, result.predictions, num_classes))


def load_trained(source, device="cpu", config=None):
    """The `TrainedNetwork` a .npz checkpoint or a run folder (its best.npz, else its last.npz)
    holds, on `device`. `config` (checked) replaces the checkpoint's: its network must have the
    same parameters. Raises `CheckpointError` or `ConfigError` naming what does not fit."""
    checkpoint = load_checkpoint(_best_else_last(source))
    if config is None:
        try:
            config = validate_config(checkpoint.config)
        except ConfigError as error:
            raise ConfigError(f"the config saved in {checkpoint.path}: {error}") from None
    net = nets.build(config["model"], seed=config["train"]["seed"])
    check_matches(net, checkpoint.weights, f"checkpoint {checkpoint.path}")
    check_trustworthy(checkpoint)
    net.to(device)
    restore(checkpoint, net)
    return TrainedNetwork(net, config, checkpoint)


def check_trustworthy(checkpoint):
    """Raise `CheckpointError` unless every weight of `checkpoint` is finite and within
    +-`WEIGHT_BOUND`: a diverged run's weights give NaN losses and probabilities."""
    for name, weights in checkpoint.weights.items():
        sizes = numpy.abs(numpy.asarray(weights))
        if not numpy.isfinite(sizes).all():
            problem = "holds NaN or infinite values"
        elif sizes.size and float(sizes.max()) > WEIGHT_BOUND:
            problem = (f"holds values up to {float(sizes.max()):.3g} in size, beyond the "
                       f"{WEIGHT_BOUND:.0e} no trained network reaches")
        else:
            continue
        raise CheckpointError(f"checkpoint {checkpoint.path} cannot be used: its parameter "
                              f"{name!r} {problem} (the run diverged, or the file was altered); "
                              f"use an earlier checkpoint, or train again with a lower "
                              f"learning rate")


def default_run_dir(config_path, root="runs"):
    """runs/<config name>-<YYYYmmdd-HHMMSS>, with a -2, -3, ... suffix if that exists already."""
    base = Path(root) / f"{Path(config_path).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    candidate, number = base, 1
    while candidate.exists():
        number += 1
        candidate = base.with_name(f"{base.name}-{number}")
    return candidate


def prepare_run_dir(run_dir):
    """Create `run_dir`, take its lock and prove it writable; refuse one that holds a run or
    that another process writes. The lock, released before a checkpoint was saved, removes what
    was written (and a folder it made)."""
    run_dir = Path(run_dir)
    _refuse_early(run_dir)
    existed = run_dir.is_dir()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise RunFolderError(f"cannot create the output folder {run_dir}: "
                             f"{error.strerror or error} ({error.filename or run_dir}); "
                             f"choose another with --output") from None
    lock = lock_run_dir(run_dir, "the output folder")
    try:
        lock.undo_unless(run_dir / LAST_NAME, created_folder=not existed)
        _refuse_early(run_dir)  # again, under the lock: a run may have saved there meanwhile
        check_writable(run_dir)
    except BaseException:
        lock.release()
        raise
    return lock


def lock_run_dir(run_dir, what="the run folder"):
    """The `FolderLock` of the existing folder `run_dir`, or `RunFolderError` naming the process
    that holds it (or why it cannot be taken)."""
    try:
        return FolderLock.acquire(run_dir)
    except FolderBusyError as busy:
        raise _in_use(run_dir, busy.holder) from None
    except OSError as error:
        raise RunFolderError(f"cannot write to {what} {run_dir}: {error.strerror or error} "
                             f"(cannot lock it); choose another with --output") from None


class FolderTakenError(RunFolderError):
    """A new run's folder already holds a run, or another process is writing to it."""


def _in_use(run_dir, holder):
    return FolderTakenError(f"{run_dir} is in use: {holder} is writing to it (it holds "
                            f"{Path(run_dir) / LOCK_NAME}); wait for that run to end or stop it, "
                            f"or choose another with --output")


def check_writable(run_dir):
    """Raise `RunFolderError` unless a file can be created in `run_dir`."""
    try:
        probe_writable(run_dir)
    except OSError as error:
        raise RunFolderError(f"cannot write to the output folder {run_dir}: "
                             f"{error.strerror or error}; choose another with --output") from None


def load_data(config, data_dir=None):
    """The dataset the config's data section names (`data_dir` overrides its folder); dataset
    ``idx`` reads the unnamed folder data_dir, with every check but the checksums."""
    data = config["data"]
    data_dir = data_dir or data.get("data_dir")
    if data["dataset"] == ARRAYS:
        raise ConfigError("this run trained on images given in Python (data.dataset 'arrays'), "
                          "which no file holds: give them again in Python (to evaluate it: "
                          "xpnn.training.evaluate(load_trained(RUN).net, images, labels); to "
                          "resume it: xpnn.fit(..., train=..., resume=True), or a Dataset to "
                          "start_run/resume_run)")
    if data["dataset"] == "idx":
        if data_dir is None:
            raise ConfigError("data.dataset 'idx' reads a folder of the four IDX files: give it "
                              "as data.data_dir or --data-dir")
        return load_dataset(None, data_dir=data_dir)
    return load_dataset(data["dataset"], data_dir=data_dir, verify=True)


def start_run(config, device, run_dir, *, data_dir=None, limit_train=None, limit_test=None,
              checkpoint_every=None, workers=None, ranks=None, progress=True, echo=None,
              mode=None, dataset=None, init_from=None):
    """Check everything, create the run folder (bad input leaves nothing behind), and return a
    `Trainer` ready to `fit()`. `ranks` (default: this process's world): rank 0 alone touches
    the folder, its errors raised on every rank. `dataset`: a `data.Dataset` instead of the
    config's. `init_from`: a run folder (best.npz, else last.npz) or .npz checkpoint of the same
    parameters whose weights replace the drawn ones (optimizer and schedule start afresh)."""
    ranks = ranks if ranks is not None else world(device)
    if data_dir is not None:
        config = {**config, "data": {**config["data"], "data_dir": str(data_dir)}}
    dataset = load_data(config) if dataset is None else dataset
    run_dir = Path(run_dir)
    ranks.on_root(lambda: _refuse_early(run_dir))
    initial = None if init_from is None else ranks.on_root(lambda: _initial_weights(init_from))
    every = CHECKPOINT_EVERY if checkpoint_every is None else checkpoint_every
    trainer = RunTrainer(config, dataset, device, run_dir, limit_train=limit_train,
                         limit_test=limit_test, checkpoint_every=every, workers=workers,
                         ranks=ranks, progress=progress, echo=echo, mode=mode)
    if initial is not None:  # every rank has the same checkpoint
        mine = config["model"].get("name", trainer.net.name)
        theirs = initial.config.get("model", {}).get("name", "?") if initial.state else "?"
        try:
            check_matches(trainer.net, initial.weights, f"checkpoint {initial.path}")
        except CheckpointError as error:
            raise CheckpointError(f"cannot start {mine} from {initial.path} (a {theirs}): "
                                  f"{error}") from None
        trainer.net.load_state_dict(initial.weights)

    def create_folder():
        lock = trainer.folder_lock = prepare_run_dir(run_dir)
        lock.wrote(run_dir / CONFIG_COPY_NAME)
        _write_config_copy(run_dir, config)
    ranks.on_root(create_folder)
    return trainer


def _write_config_copy(run_dir, config):
    atomic_write(run_dir / CONFIG_COPY_NAME,
                 lambda f: yaml.safe_dump(config, f, sort_keys=False), binary=False)


def _initial_weights(source):
    """The trustworthy checkpoint `--init-from` names: a .npz file, or a run folder's best.npz
    (else its last.npz); `CheckpointError` naming what is missing."""
    source = Path(source)
    if source.is_dir() and not any((source / name).exists() for name in (BEST_NAME, LAST_NAME)):
        raise CheckpointError(f"cannot start from {source}: it holds neither {BEST_NAME} nor "
                              f"{LAST_NAME} (give a run folder or a .npz checkpoint)")
    checkpoint = load_checkpoint(_best_else_last(source))
    check_trustworthy(checkpoint)
    return checkpoint


def _best_else_last(source):
    """A run folder's best.npz if it has one, else `source` (a folder: its last.npz)."""
    source = Path(source)
    return source / BEST_NAME if source.is_dir() and (source / BEST_NAME).exists() else source


def _refuse_early(run_dir):
    """Refuse a folder that holds a run or that another process writes to (a run still training
    there is named first: it is no run to --resume yet)."""
    holder = FolderLock.holder(run_dir)
    if holder is not None:
        raise _in_use(run_dir, holder)
    if (run_dir / LAST_NAME).exists():
        raise FolderTakenError(f"{run_dir} already holds a training run ({LAST_NAME}); continue "
                               f"it with --resume {shlex.quote(str(run_dir))} or choose another "
                               f"--output")


class RunTrainer(Trainer):
    """A `Trainer` that writes its run folder under the folder's lock (rank 0): `fit` takes it
    again if it was given up, and gives it up when it returns or raises."""

    folder_lock = None  # a `FolderLock` on rank 0, None on other ranks

    def check_run_dir(self):
        """Nothing here: `start_run` and `resume_run` check the folder (under its lock)."""

    def fit(self):
        if self.folder_lock is not None and self.folder_lock.released:
            self.folder_lock = lock_run_dir(self.run_dir)
        try:
            return super().fit()
        finally:
            if self.folder_lock is not None:
                self.folder_lock.release()


def resume_run(run_dir, device, *, config=None, data_dir=None, checkpoint_every=None,
               workers=None, ranks=None, progress=True, echo=None, mode=None, dataset=None,
               epochs=None):
    """Return a `Trainer` that continues the run in `run_dir` from its last.npz (read by rank 0).
    `config`, if given, must be the run's (checked, not used). `data_dir`, `checkpoint_every`
    and `workers` (another count of threads changes the last bits) override the run's;
    `dataset`: the `data.Dataset` of a run of arrays given in Python; `epochs`, more than the
    run was started for, extends it. Nothing else may change, the number of ranks included."""
    run_dir = Path(run_dir)
    ranks = ranks if ranks is not None else world(device)
    lock = None

    def read():
        nonlocal lock
        if not run_dir.is_dir():
            raise RunFolderError(f"cannot resume: {run_dir} is not a folder (give the run folder "
                                 f"that holds {LAST_NAME})")
        try:
            lock = FolderLock.acquire(run_dir)
        except FolderBusyError as busy:
            raise RunFolderError(f"cannot resume {run_dir}: it is still being trained by "
                                 f"{busy.holder} (it holds {run_dir / LOCK_NAME}); wait for that "
                                 f"run to end, or stop it first") from None
        except OSError as error:
            raise RunFolderError(f"cannot resume {run_dir}: cannot write to it ("
                                 f"{error.strerror or error}; cannot lock it)") from None
        if not (run_dir / LAST_NAME).exists():
            raise RunFolderError(f"cannot resume: {run_dir} holds no {LAST_NAME} (the run "
                                 f"stopped before its first checkpoint, or this is not a run "
                                 f"folder); start a new run instead")
        return load_checkpoint(run_dir / LAST_NAME)
    try:
        checkpoint = ranks.on_root(read)
        state = checkpoint.state
        if state is None:
            raise CheckpointError(f"cannot resume {run_dir}: its {LAST_NAME} was not saved by a "
                                  f"training run")
        if state.ranks != ranks.size:
            raise CheckpointError(
                f"cannot resume {run_dir} on {ranks.size} rank(s): it was trained on "
                f"{state.ranks}, and another count splits every batch differently; resume it "
                f"with" + ("out mpiexec" if state.ranks == 1 else
                           f" mpiexec -n {state.ranks} (or --processes {state.ranks})"))
        try:
            saved_config = validate_config(_with_old_defaults(checkpoint.config))
        except ConfigError as error:
            raise CheckpointError(f"{checkpoint.path} holds a config that is no longer valid: "
                                  f"{error}") from None
        if epochs is not None and epochs != saved_config["train"]["epochs"]:
            saved_config = _extended(saved_config, epochs, run_dir, state)
        if config is not None:
            _check_same_config(config, saved_config, checkpoint)
        if data_dir is not None:
            saved_config["data"]["data_dir"] = str(data_dir)
        trainer = RunTrainer(
            saved_config, load_data(saved_config) if dataset is None else dataset, device,
            run_dir, limit_train=state.limit_train, limit_test=state.limit_test,
            checkpoint_every=(state.checkpoint_every if checkpoint_every is None
                              else checkpoint_every),
            workers=state.workers if workers is None else workers, ranks=ranks,
            progress=progress, echo=echo, mode=mode)
        if trainer.train_count != (state.train_count or trainer.train_count):
            raise CheckpointError(f"cannot resume {run_dir}: it was trained on "
                                  f"{state.train_count} images but the dataset now gives "
                                  f"{trainer.train_count}")
        if state.step > trainer.steps_per_epoch:
            raise CheckpointError(f"cannot resume {run_dir}: its {LAST_NAME} is at step "
                                  f"{state.step} of an epoch of {trainer.steps_per_epoch} steps")
        trainer.load(checkpoint)

        def tidy_folder():
            check_writable(run_dir)
            remove_stale_temporaries(run_dir)
            write_metrics(run_dir, trainer.metrics)  # drop any epoch line written after last.npz
            if epochs is not None:  # the config copy says what the run now trains
                _write_config_copy(run_dir, saved_config)
        ranks.on_root(tidy_folder)
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    trainer.folder_lock = lock
    return trainer


def _extended(config, epochs, run_dir, state):
    """`config` trained for `epochs` (more than its train.epochs) epochs in all, checked again."""
    saved = config["train"]["epochs"]
    if epochs < saved:
        raise RunFolderError(f"cannot resume {run_dir} for {epochs} epochs: it was started for "
                             f"{saved} (a run can be extended, not shortened); give --epochs "
                             f"{saved + 1} or more, or none")
    if state.stopped_early:
        raise RunFolderError(f"cannot extend {run_dir}: it stopped early after epoch "
                             f"{state.epoch} (train.early_stopping); start a new run with "
                             f"--init-from {shlex.quote(str(run_dir))} to train it further")
    return validate_config({**config, "train": {**config["train"], "epochs": epochs}})


def _with_old_defaults(config):
    """`config` as saved by an xpnn that predates data.validation: those runs held nothing out,
    so they resume with validation 0 (the default of 5,000 would change their training set)."""
    data = config.get("data") if isinstance(config, dict) else False
    if data is None or isinstance(data, dict) and "validation" not in data:
        return {**config, "data": {**(data or {}), "validation": 0}}
    return config


def _check_same_config(config, saved_config, checkpoint):
    """Refuse a config of another architecture (naming the first mismatched parameter) or of
    other training settings than the run's."""
    if config["model"] != saved_config["model"]:
        net = nets.build(config["model"], seed=config["train"]["seed"])
        check_matches(net, checkpoint.weights, f"checkpoint {checkpoint.path}")
    for section in ("model", "train", "data"):
        if json.dumps(config[section], sort_keys=True) != json.dumps(saved_config[section],
                                                                      sort_keys=True):
            differing = sorted(key for key in set(config[section]) | set(saved_config[section])
                               if config[section].get(key) != saved_config[section].get(key))
            raise RunFolderError(
                f"the given config differs from the one {checkpoint.path.parent} was started "
                f"with, in {section}.{differing[0] if differing else '?'}; a resumed run keeps "
                f"its own config: drop -c to resume it")
