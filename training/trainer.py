"""The training loop: shuffled batches on the device, validation and test evaluation, metrics and
checkpoints.

The last `data.validation` training images are held out (`data.hold_out`); the rest go to the
device once, as uint8; each step gathers its batch there by index, converts it to float32 / 255
and, if the config asks, augments it (`training.augment`). Each epoch's order depends only on
(seed, epoch) and each batch's transforms only on (seed, epoch, step), so a run resumed from a
checkpoint taken at any step makes exactly the batches, and on the CPU exactly the float
operations, of an uninterrupted run. best.npz is the epoch of best validation accuracy: the test
set is only reported, never used to choose.

Nothing waits for the device inside a step: loss and correct counts are summed on the device and
read every `READ_EVERY` steps (for the progress bar and the NaN check), before every checkpoint
and at the end of the epoch.

On several ranks (`mpiexec -n N`, see `backend.communicator`), every rank runs this same loop on
its slice of each global batch; the gradients are summed over ranks in rank order before each
optimizer step, so every rank holds the same weights. Every rank evaluates the (whole)
validation and test sets and keeps in lockstep; rank 0 alone writes files and shows progress.
"""
import math
import signal
import sys
import threading
import time
from pathlib import Path

import numpy
from tqdm import tqdm

from xpnn import layers, nets
from xpnn.backend import available_bytes, cpu_count, format_bytes
from xpnn.backend.communicator import world
from xpnn.backend.warp import warp_affine
from xpnn.data import DataError, hold_out
from xpnn.nets import ConfigError
from xpnn.optim import Schedule, make_optimizer
from xpnn.training.augment import Augmentation
from xpnn.training.batches import epoch_permutation, num_batches, to_float
from xpnn.training.captured_step import CapturedStep
from xpnn.training.checkpoint import BEST_NAME, LAST_NAME, restore, save_checkpoint
from xpnn.training.errors import DivergenceError, TrainingError, TrainingInterrupted
from xpnn.training.metrics import RunningStats, evaluate, format_epoch, write_metrics

CHECKPOINT_EVERY = 200  # steps between mid-epoch checkpoints, unless told otherwise
READ_EVERY = 20  # steps between reads of the running loss (each read waits for the device)
# Test-set batches: large on a GPU (fewer launches); small on the CPU, where a batch of 1000
# doubled the peak memory of a resnet run (312 MiB against 148) for no speed.
EVAL_BATCH_SIZE = {"cpu": 200, "gpu": 1000}
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def make_schedule(train_config):
    options = {key: value for key, value in train_config["schedule"].items() if key != "name"}
    return Schedule(train_config["schedule"]["name"], train_config["lr"], train_config["epochs"],
                    **options)


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
    their gradients and momentum, and `dataset_bytes` of data) can fit in `device`'s memory.

    The estimate counts only what a step cannot do without (every layer's output, kept for
    backward), so a refusal is certain, not a guess.
    """
    itemsize = device.xp.dtype(net.parameters()[0].dtype).itemsize
    per_image = net.stored_values_per_image() * itemsize
    needed = batch_size * per_image + 3 * net.num_parameters() * itemsize + dataset_bytes
    available = available_bytes(device)
    if needed > available:
        raise ConfigError(
            f"train.batch_size {batch_size:,} does not fit: a training step on {device.name} "
            f"needs at least {format_bytes(needed)} ({format_bytes(per_image)} of layer outputs "
            f"per image) but {format_bytes(available)} is available; use a smaller batch size")


class Trainer:
    """Trains one network from a checked config on one device, saving into a run folder.

    Args:
        config: a checked config (`training.config.load_config`).
        dataset: a `data.Dataset` (host uint8 images, int64 labels).
        device: a `backend.Device`.
        run_dir: folder for last.npz, best.npz and metrics.jsonl (must exist and be writable).
        limit_train: train on only the first N training images left after the validation split
            (None: all).
        limit_test: evaluate on only the first N validation and the first N test images (None:
            all).
        checkpoint_every: also save last.npz every this many steps inside an epoch (0: never).
        workers: CPU threads that each run a slice of every batch (`nets.DataParallel`); the
            result depends on the split, so a resumed run keeps its number to stay exact.
            Default: the cores this process may use, shared among the ranks on this host.
        ranks: the job's ranks (`backend.communicator`); default: the world this process was
            launched into (one rank unless started by mpiexec).
        progress: show a tqdm progress bar (on stderr).
        echo: called with each epoch's summary line.
        cuda_graph: on a GPU, in one process, run each training step as one CUDA graph
            (`training.captured_step`); evaluation stays eager.
    """

    def __init__(self, config, dataset, device, run_dir, *, limit_train=None, limit_test=None,
                 checkpoint_every=CHECKPOINT_EVERY, workers=None, ranks=None, progress=True,
                 echo=None, cuda_graph=False):
        self.config = config
        self.train_config = config["train"]
        self.device = device
        self.run_dir = Path(run_dir)
        self.checkpoint_every = int(checkpoint_every or 0)
        self.ranks = ranks if ranks is not None else world(device)
        self.progress = progress and self.ranks.is_root
        echo = echo or (lambda line: tqdm.write(line, file=sys.stdout))
        self.echo = echo if self.ranks.is_root else (lambda line: None)
        self.limit_train, self.limit_test = limit_train, limit_test
        if cuda_graph and self.ranks.size > 1:
            raise TrainingError(f"--cuda-graph captures one process's step, but this run has "
                                f"{self.ranks.size} ranks; drop --cuda-graph or run one process")
        if cuda_graph and not device.is_gpu:
            raise TrainingError(f"--cuda-graph captures the training step on a GPU, but this run "
                                f"is on {device.name}; drop --cuda-graph or use --device gpu")
        device.use()  # the run's device is current from here on (see `Device.use`)

        self.num_classes = config["model"]["num_classes"]
        self.net = nets.build(config["model"], seed=self.train_config["seed"])
        self.net.loss_layer = layers.SoftmaxCrossEntropyLossLayer(
            self.train_config["label_smoothing"])
        check_dataset_fits(self.net, dataset, self.num_classes)
        split = hold_out(dataset, config["data"]["validation"])
        train_images, train_labels = split.train_images[:limit_train], split.train_labels[:limit_train]
        evaluated = {"validation": (split.validation_images[:limit_test],
                                    split.validation_labels[:limit_test]),
                     "test": (dataset.test_images[:limit_test], dataset.test_labels[:limit_test])}
        dataset_bytes = sum(array.nbytes for array in (train_images, train_labels,
                                                      *evaluated["validation"], *evaluated["test"]))
        rank_batch = -(-min(self.train_config["batch_size"], len(train_labels)) // self.ranks.size)
        check_memory_fits(self.net, rank_batch, device, dataset_bytes)
        self.net.to(device)
        self.optimizer = make_optimizer(self.train_config, self.net.parameters())
        self.ranks.broadcast(self.optimizer.data)  # every rank starts from rank 0's weights
        self.workers = int(workers) if workers is not None else 1 if device.is_gpu else max(
            1, cpu_count() // self.ranks.local_size)
        if self.workers > 1 and device.is_gpu:
            raise TrainingError(f"workers={self.workers} splits batches over CPU threads; on "
                                f"{device.name} use workers=1")
        # What computes a step: on a GPU the network itself; on the CPU replicas of it on worker
        # threads, one core each (BLAS single-threaded, so results do not depend on its threads).
        self.model = self.net if device.is_gpu else nets.DataParallel(self.net, self.workers)
        self.schedule = make_schedule(self.train_config)

        self.augment = Augmentation.from_config(config["data"]["augment"])
        self.train_images = device.send(train_images)
        self.train_labels = device.send(train_labels)
        # {split: (device images, device labels)} evaluated after each epoch; no validation
        # set when data.validation is 0
        self.evaluated = {name: (device.send(images), device.send(labels))
                          for name, (images, labels) in evaluated.items() if len(labels)}
        self.train_count = int(self.train_labels.shape[0])
        self.steps_per_epoch = num_batches(self.train_count, self.train_config["batch_size"])
        smallest_batch = min(self.train_count, self.train_config["batch_size"],
                             self.train_count % self.train_config["batch_size"] or self.train_count)
        if smallest_batch < self.ranks.size:
            raise TrainingError(
                f"{self.ranks.size} ranks cannot share a batch of {smallest_batch} training "
                f"image(s) (the epoch's {'only' if self.steps_per_epoch == 1 else 'last'} batch); "
                f"use fewer ranks, or a batch size and image count that leave every batch at "
                f"least {self.ranks.size} images")

        self.epoch = 0          # epochs finished (0-based index of the current epoch)
        self.step = 0           # steps done in the current epoch
        self.metrics = []       # one record per finished epoch
        self.best_val_acc = None
        self.stats = RunningStats(device.xp)
        self.seconds_before = 0.0  # time spent on the current epoch before a resume
        self.stop_signal = None
        self.captured_step = CapturedStep(self) if cuda_graph else None

    # -- checkpoints ---------------------------------------------------------------------------

    @property
    def last_path(self):
        return self.run_dir / LAST_NAME

    @property
    def best_path(self):
        return self.run_dir / BEST_NAME

    def meta(self, seconds=0.0):
        """The JSON part of a checkpoint: config, position, metrics and running sums."""
        loss_sum, correct, seen = self.read_stats()
        return {
            "config": self.config,
            "epoch": self.epoch,
            "step": self.step,
            "steps_per_epoch": self.steps_per_epoch,
            "train_count": self.train_count,
            "limit_train": self.limit_train,
            "limit_test": self.limit_test,
            "checkpoint_every": self.checkpoint_every,
            "workers": self.workers,
            "ranks": self.ranks.size,
            "metrics": self.metrics,
            "best_val_acc": self.best_val_acc,
            "epoch_progress": {"loss_sum": loss_sum, "correct": correct, "seen": seen,
                               "seconds": self.seconds_before + seconds},
            "model_name": self.net.name,
            "num_parameters": self.net.num_parameters(),
            "shuffle": "numpy.random.default_rng([seed, epoch]).permutation(train_count)",
            "device": self.device.name,
            "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }

    def save(self, path=None, seconds=0.0):
        """Save the current state (after checking it is finite) to `path` (default last.npz);
        every rank checks, rank 0 writes."""
        self.check_finite()
        meta = self.meta(seconds)
        if self.ranks.is_root:
            save_checkpoint(path or self.last_path, self.net, self.optimizer, meta)

    def load(self, checkpoint):
        """Continue from `checkpoint` (a `training.checkpoint.Checkpoint` of this run)."""
        restore(checkpoint, self.net, self.optimizer)
        meta = checkpoint.meta
        self.epoch, self.step = checkpoint.epoch, checkpoint.step
        self.metrics = checkpoint.metrics
        self.best_val_acc = meta.get("best_val_acc")
        progress = meta.get("epoch_progress", {})
        if self.ranks.is_root:  # the sums so far count once, in rank 0's share
            self.stats = RunningStats(self.device.xp, progress.get("loss_sum", 0.0),
                                      progress.get("correct", 0), progress.get("seen", 0))
        self.seconds_before = float(progress.get("seconds", 0.0))

    def read_stats(self):
        """(loss sum, correct count, images seen) of the epoch so far, over all ranks (a device
        sync; on several ranks a collective, so every rank calls it at the same points)."""
        self.ranks.settle()  # every read of device values comes through here first
        sums = numpy.array(self.stats.read(), dtype=numpy.float64)
        self.ranks.sum_in_rank_order(sums)
        return float(sums[0]), int(sums[1]), int(sums[2])

    # -- checks --------------------------------------------------------------------------------

    def check_finite(self):
        """Raise `DivergenceError` if the running loss or any weight is NaN or infinite."""
        loss_sum, _, _ = self.read_stats()
        if not math.isfinite(loss_sum):
            self.diverged(f"the training loss became {loss_sum}")
        xp = self.device.xp
        for name, param in self.net.named_parameters():
            if not bool(xp.isfinite(param.data).all()):
                self.diverged(f"parameter {name!r} holds NaN or infinite values")

    def diverged(self, what):
        where = f"epoch {self.epoch + 1} step {self.step}/{self.steps_per_epoch}"
        kept = (f"the last good checkpoint {self.last_path} is unchanged"
                if self.last_path.exists() else "no checkpoint was saved")
        raise DivergenceError(
            f"training diverged: {what} ({where}, lr {self.optimizer.lr:.4g}); stopped without "
            f"saving these weights; {kept}; try a lower learning rate (--lr)"
        )

    # -- signals -------------------------------------------------------------------------------

    def _on_signal(self, signal_number, frame):
        if self.stop_signal is not None and signal_number == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop at once (last.npz stays whole)
        self.stop_signal = signal_number

    def stop_requested(self, step=0):
        """Whether a SIGINT/SIGTERM asks to stop before `step` of the epoch. On several ranks
        they decide together, every `READ_EVERY` steps: any rank's signal stops every rank at
        the same step (so the checkpoint they save is one state)."""
        if self.ranks.size == 1:
            return self.stop_signal is not None
        if step % READ_EVERY:
            return False
        signals = numpy.zeros(self.ranks.size)
        signals[self.ranks.rank] = self.stop_signal or 0
        self.ranks.sum_in_rank_order(signals)
        received = [int(number) for number in signals if number]
        if received and self.stop_signal is None:
            self.stop_signal = received[0]
        return bool(received)

    def _evaluation_should_stop(self):
        """A signal cuts the test-set evaluation short on one rank; ranks finish it (and decide
        together at the next `stop_requested`)."""
        return self.ranks.size == 1 and self.stop_signal is not None

    def _install_signal_handlers(self):
        if threading.current_thread() is not threading.main_thread():
            return {}
        return {number: signal.signal(number, self._on_signal) for number in STOP_SIGNALS}

    def interrupt(self, seconds):
        """Save last.npz at the current position and raise `TrainingInterrupted`."""
        self.save(seconds=seconds)
        name = signal.Signals(self.stop_signal).name
        raise TrainingInterrupted(
            f"{name}: stopped at epoch {self.epoch + 1} step {self.step}/{self.steps_per_epoch} "
            f"and saved {self.last_path}", self.stop_signal, self.run_dir)

    # -- the loop ------------------------------------------------------------------------------

    def fit(self):
        """Train until `epochs` epochs are done; return the list of epoch records.

        Raises `TrainingInterrupted` (after saving) on SIGINT/SIGTERM and `DivergenceError`
        (without saving) when the loss or weights stop being finite.
        """
        self.device.use()
        previous = self._install_signal_handlers()
        try:
            # Overflow on the way to a NaN loss is reported once, clearly, by the loss check.
            with numpy.errstate(over="ignore", invalid="ignore", divide="ignore"):
                if not self.ranks.on_root(self.last_path.exists):
                    self.save()  # from here on, a run killed at any moment can be resumed
                while self.epoch < self.train_config["epochs"]:
                    started = time.perf_counter()
                    self.train_epoch(started)
                    self.finish_epoch(started)
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)
        return self.metrics

    def train_epoch(self, started):
        """Run the remaining steps of the current epoch."""
        steps, batch_size = self.steps_per_epoch, self.train_config["batch_size"]
        total_epochs = self.train_config["epochs"]
        order = self.device.send(epoch_permutation(self.train_config["seed"], self.epoch,
                                                   self.train_count))
        maps = self.epoch_maps()
        bar = tqdm(total=steps, initial=self.step, desc=f"epoch {self.epoch + 1}/{total_epochs}",
                   leave=False, dynamic_ncols=True, disable=not self.progress)
        try:
            for step in range(self.step, steps):
                if self.stop_requested(step):
                    self.interrupt(time.perf_counter() - started)
                rows = slice(step * batch_size, (step + 1) * batch_size)
                batch = order[rows]
                shard = self.ranks.shard(len(batch))
                self.train_step(batch[shard], len(batch), self.epoch + step / steps,
                                None if maps is None else maps[rows][shard])
                self.step = step + 1
                bar.update(1)
                if self.step % READ_EVERY == 0 or self.step == steps:
                    self.check_loss(bar)
                global_step = self.epoch * steps + self.step
                if self.checkpoint_every and global_step % self.checkpoint_every == 0 \
                        and self.step < steps:
                    self.save(seconds=time.perf_counter() - started)
        finally:
            bar.close()

    def train_step(self, index, batch_size, epoch_position, maps=None):
        """One step at fractional epoch `epoch_position` on a batch of `batch_size` images, of
        which this rank computes `index` (device int64 indices; all of them on one rank), each
        warped by its row of `maps` (device (len(index), 2, 3); None: no augmentation)."""
        if self.captured_step is not None:  # one rank: `index` is the whole batch
            self.captured_step(index, self.schedule(epoch_position), maps)
            return
        images = to_float(self.train_images[index])
        if maps is not None:
            images = warp_affine(images, maps)
        labels = self.train_labels[index]
        self.optimizer.lr = self.schedule(epoch_position)
        self.optimizer.zero_grad()
        loss, logits = self.model.forward_loss(images, labels)
        self.stats.add(loss, logits, labels)
        # This rank's share of the batch's mean loss; the ranks' gradients then add up to it.
        self.model.backward(len(labels) / batch_size)
        self.ranks.sum_in_rank_order(self.optimizer.grad)
        self.optimizer.step()

    def epoch_maps(self):
        """The current epoch's augmentation maps on the device, in the epoch's batch order
        (float32 (train_count, 2, 3), see `training.augment`); None without augmentation. Drawn
        per whole batch, so an image is moved alike on any number of ranks."""
        if self.augment is None:
            return None
        batch_size = self.train_config["batch_size"]
        sizes = [min(batch_size, self.train_count - start)
                 for start in range(0, self.train_count, batch_size)]
        height, width = self.train_images.shape[2:]
        return self.device.send(self.augment.epoch_maps(sizes, height, width,
                                                        self.train_config["seed"], self.epoch))

    def check_loss(self, bar):
        """Read the running sums (a device sync), stop on NaN/inf, show them on the bar."""
        loss_sum, correct, seen = self.read_stats()
        if not math.isfinite(loss_sum):
            self.diverged(f"the training loss became {loss_sum}")
        bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{100 * correct / seen:.2f}%",
                        refresh=False)

    def finish_epoch(self, started):
        """Evaluate on the validation and test sets, record the epoch, save best.npz (at the
        best validation accuracy) and last.npz, and write the metrics."""
        if self.stop_requested():
            self.interrupt(time.perf_counter() - started)
        self.check_finite()
        loss_sum, correct, seen = self.read_stats()
        train_loss, train_acc = (loss_sum / seen, correct / seen) if seen else (math.nan, math.nan)
        record = {"epoch": self.epoch + 1, "train_loss": train_loss, "train_acc": train_acc,
                  "val_loss": None, "val_acc": None}
        for name, (images, labels) in self.evaluated.items():
            evaluation = evaluate(self.model, images, labels,
                                  EVAL_BATCH_SIZE["gpu" if self.device.is_gpu else "cpu"],
                                  should_stop=self._evaluation_should_stop)
            if evaluation is None:
                self.interrupt(time.perf_counter() - started)
            if not math.isfinite(evaluation.loss):
                self.diverged(f"the {name} loss became {evaluation.loss}")
            short = "val" if name == "validation" else name
            record[f"{short}_loss"], record[f"{short}_acc"] = evaluation.loss, evaluation.accuracy
        record["lr"] = self.optimizer.lr
        record["seconds"] = round(self.seconds_before + time.perf_counter() - started, 3)
        self.metrics.append(record)
        self.epoch, self.step = self.epoch + 1, 0
        self.stats = RunningStats(self.device.xp)
        self.seconds_before = 0.0
        # best.npz before last.npz: if a crash falls between them, the resumed run redoes this
        # epoch bit for bit and writes the same best.npz again.
        if record["val_acc"] is not None and (self.best_val_acc is None
                                              or record["val_acc"] > self.best_val_acc):
            self.best_val_acc = record["val_acc"]
            self.save(self.best_path)
        self.save()
        if self.ranks.is_root:
            write_metrics(self.run_dir, self.metrics)
        self.echo(format_epoch(record, self.train_config["epochs"]))
