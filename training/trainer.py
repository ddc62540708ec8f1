"""The training loop: epochs of steps (`training.step`), each epoch evaluated, checkpoints along
the way; a run resumed at any step makes exactly the batches (on the CPU, the bits) of an
uninterrupted one. Ranks run it in lockstep, each on its slice of each batch; rank 0 alone
writes files and shows progress."""
import dataclasses
import math
import signal
import sys
import time
from pathlib import Path

import numpy
from tqdm import tqdm

from xpnn.backend import mode_for, running_on
from xpnn.backend.communicator import world
from xpnn.training.batches import epoch_permutation
from xpnn.training.checkpoint import (BEST_NAME, LAST_NAME, mark_stopped_early, restore,
                                      save_checkpoint)
from xpnn.training.errors import DivergenceError, TrainingInterrupted
from xpnn.training.files import ready_folder
from xpnn.training.metrics import (EVAL_BATCH_SIZE, READ_EVERY, evaluate, format_epoch,
                                   shows_progress_after, write_metrics)
from xpnn.training.run_state import SHUFFLE, EpochProgress, RunState
from xpnn.training.setup import set_up
from xpnn.training.stopping import EarlyStopping, StopSignals

CHECKPOINT_EVERY = 200  # steps between mid-epoch checkpoints, unless told otherwise


class Trainer:
    """Trains one network from a checked config (`dataset` a `data.Dataset`, `device` a
    `backend.Device`) into `run_dir` (created if missing, checked writable first).

    `limit_train`, `limit_test`, `workers`: `training.setup.set_up`'s. `checkpoint_every`: also
    save last.npz every this many steps (0: never). `ranks`: default this process's world.
    `progress`: a tqdm bar on stderr; `echo`: called with each epoch's line. `mode`:
    `backend.Mode` (None: the mode set around, else the device's), at train.precision.
    """

    def __init__(self, config, dataset, device, run_dir, *, limit_train=None, limit_test=None,
                 checkpoint_every=CHECKPOINT_EVERY, workers=None, ranks=None, progress=True,
                 echo=None, mode=None):
        self.config, self.train_config = config, config["train"]
        self.device, self.run_dir = device, Path(run_dir)
        self.last_path, self.best_path = self.run_dir / LAST_NAME, self.run_dir / BEST_NAME
        self.checkpoint_every = int(checkpoint_every or 0)
        self.ranks = ranks if ranks is not None else world(device)
        self.progress = progress and self.ranks.is_root
        echo = echo or (lambda line: tqdm.write(line, file=sys.stdout))
        self.echo = echo if self.ranks.is_root else (lambda line: None)
        self.limit_train, self.limit_test = limit_train, limit_test
        if self.ranks.is_root:
            self.check_run_dir()
        self.mode = dataclasses.replace(mode or mode_for(device, self.ranks.size),
                                        precision=self.train_config["precision"])
        self.mode.check(device, self.ranks.size)
        with running_on(device, self.mode):
            setup = set_up(config, dataset, device, limit_train=limit_train, ranks=self.ranks,
                           limit_test=limit_test, workers=workers, graph=self.mode.graph)
        self.net, self.model, self.optimizer = setup.net, setup.model, setup.optimizer
        self.training_step, self.run_step, self.stats = setup.step, setup.run_step, setup.stats
        self.workers, self.evaluated, self.train_images = (setup.workers, setup.evaluated,
                                                           setup.train_images)
        self.train_count, self.steps_per_epoch = setup.train_count, setup.steps_per_epoch
        self.schedule, self.augment = setup.schedule, setup.augment
        self.epoch, self.step = 0, 0  # epochs finished; steps done in the current epoch
        self.metrics, self.best_val_acc = [], None  # one record per finished epoch
        self.early_stopping = EarlyStopping()
        self.seconds_before = 0.0  # time spent on the current epoch before a resume
        self.stops = StopSignals(self.ranks, READ_EVERY)

    def check_run_dir(self):
        ready_folder(self.run_dir, "give the Trainer a folder it can write to")

    @property
    def finished(self):
        """Whether the run has trained all its epochs, or stopped early."""
        return self.early_stopping.stopped or self.epoch >= self.train_config["epochs"]

    def state(self, seconds=0.0):
        """The run's `RunState` now (`seconds`: spent on this epoch since the start or resume)."""
        loss_sum, correct, seen = self.read_stats()
        return RunState(
            self.config, self.epoch, self.step, self.steps_per_epoch, self.train_count,
            self.limit_train, self.limit_test, self.checkpoint_every, self.workers,
            self.ranks.size, self.metrics, self.best_val_acc,
            EpochProgress(loss_sum, correct, seen, self.seconds_before + seconds),
            *dataclasses.astuple(self.early_stopping), self.net.name, self.net.num_parameters(),
            SHUFFLE, self.device.name, time.strftime("%Y-%m-%dT%H:%M:%S%z"))

    def save(self, path=None, seconds=0.0):
        """Check the state is finite (every rank) and save it to `path` (default last.npz; rank 0)."""
        self.check_finite()
        state = self.state(seconds)
        if self.ranks.is_root:
            save_checkpoint(path or self.last_path, self.net, self.optimizer, state=state)

    def load(self, checkpoint):
        """Continue from `checkpoint` (a `training.checkpoint.Checkpoint` of this run)."""
        restore(checkpoint, self.net, self.optimizer)
        state, progress = checkpoint.state, checkpoint.state.epoch_progress
        self.epoch, self.step = state.epoch, state.step
        self.metrics, self.best_val_acc = list(state.metrics), state.best_val_acc
        self.early_stopping = EarlyStopping(state.stop_reference, state.stale_epochs,
                                            state.stopped_early)
        if self.ranks.is_root:  # the sums so far count once, in rank 0's share
            self.stats.reset(progress.loss_sum, progress.correct, progress.seen)
        self.seconds_before = float(progress.seconds)

    def read_stats(self):
        """(loss sum, correct count, images seen) of the epoch so far, over all ranks (a device
        sync; on several ranks a collective, so every rank calls it at the same points)."""
        self.ranks.wait()  # every read of device values comes through here first
        sums = numpy.array(self.stats.read(), dtype=numpy.float64)
        self.ranks.sum_in_rank_order(sums)
        return float(sums[0]), int(sums[1]), int(sums[2])

    def check_finite(self, weights=True):
        """`read_stats()`; `DivergenceError` if the loss sum or (with `weights`) a weight is not
        finite."""
        sums = self.read_stats()
        if not math.isfinite(sums[0]):
            self.diverged(f"the training loss became {sums[0]}")
        for name, param in self.net.named_parameters() if weights else ():
            if not bool(self.device.xp.isfinite(param.data).all()):
                self.diverged(f"parameter {name!r} holds NaN or infinite values")
        return sums

    def diverged(self, what):
        where = f"epoch {self.epoch + 1} step {self.step}/{self.steps_per_epoch}"
        kept = (f"the last good checkpoint {self.last_path} is unchanged"
                if self.last_path.exists() else "no checkpoint was saved")
        raise DivergenceError(
            f"training diverged: {what} ({where}, lr {self.optimizer.lr:.4g}); stopped without "
            f"saving these weights; {kept}; try a lower learning rate (--lr)")

    def interrupt(self, seconds):
        """Save last.npz at the current position and raise `TrainingInterrupted`."""
        self.save(seconds=seconds)
        name = signal.Signals(self.stops.signal).name
        raise TrainingInterrupted(
            f"{name}: stopped at epoch {self.epoch + 1} step {self.step}/{self.steps_per_epoch} "
            f"and saved {self.last_path}", self.stops.signal, self.run_dir)

    def fit(self):
        """Train all `epochs`; return the epoch records. Raises `TrainingInterrupted` (after
        saving) on SIGINT/SIGTERM, `DivergenceError` (without saving) on a non-finite loss or
        weight."""
        if self.schedule.warmup_note() and not self.finished:
            self.echo(self.schedule.warmup_note())
        # Overflow on the way to a NaN loss is reported once, clearly, by the loss check.
        with running_on(self.device, self.mode), self.stops.handled(), numpy.errstate(
                over="ignore", invalid="ignore", divide="ignore"):
            if not self.ranks.on_root(self.last_path.exists):
                self.save()  # from here on, a run killed at any moment can be resumed
            if self.early_stopping.stopped and self.ranks.is_root and self.best_path.exists():
                mark_stopped_early(self.best_path, self.epoch)  # again, after a crash
            while not self.finished:
                started = time.perf_counter()
                self.train_epoch(started)
                self.finish_epoch(started)
        return self.metrics

    def train_epoch(self, started):
        """Run the remaining steps of the current epoch."""
        steps, batch_size = self.steps_per_epoch, self.train_config["batch_size"]
        seed = self.train_config["seed"]
        order = self.device.send(epoch_permutation(seed, self.epoch, self.train_count))
        maps = None if self.augment is None else self.device.send(self.augment.epoch_maps(
            self.train_count, batch_size, *self.train_images.shape[2:], seed, self.epoch))
        bar = tqdm(total=steps, initial=self.step, leave=False, dynamic_ncols=True,
                   desc=f"epoch {self.epoch + 1}/{self.train_config['epochs']}",
                   disable=not self.progress)
        try:
            for step in range(self.step, steps):
                if self.stops.requested(step):
                    self.interrupt(time.perf_counter() - started)
                rows = slice(step * batch_size, (step + 1) * batch_size)
                batch = order[rows]
                shard = self.ranks.shard(len(batch))
                self.train_step(batch[shard], self.schedule(self.epoch + step / steps),
                                None if maps is None else maps[rows][shard], len(batch))
                self.step = step + 1
                bar.update(1)
                if shows_progress_after(self.step, steps):
                    loss_sum, correct, seen = self.check_finite(weights=False)
                    bar.set_postfix(loss=f"{loss_sum / seen:.4f}", refresh=False,
                                    acc=f"{100 * correct / seen:.2f}%")
                if self.checkpoint_every and self.step < steps and \
                        (self.epoch * steps + self.step) % self.checkpoint_every == 0:
                    self.save(seconds=time.perf_counter() - started)
        finally:
            bar.close()

    def train_step(self, index, lr, maps, batch_size):  # the tests' hook into every step
        self.run_step(index, lr, maps, batch_size)

    def finish_epoch(self, started):
        """Evaluate on the validation and test sets, record the epoch, save best.npz (at the
        best validation accuracy) and last.npz, and write the metrics."""
        if self.stops.requested():
            self.interrupt(time.perf_counter() - started)
        batch_size = EVAL_BATCH_SIZE["gpu" if self.device.is_gpu else "cpu"]
        loss_sum, correct, seen = self.check_finite()
        train_loss, train_acc = (loss_sum / seen, correct / seen) if seen else (math.nan, math.nan)
        record = {"epoch": self.epoch + 1, "train_loss": train_loss, "train_acc": train_acc,
                  "val_loss": None, "val_acc": None, "test_loss": None, "test_acc": None}
        for name, (images, labels) in self.evaluated.items():
            evaluation = evaluate(self.model, images, labels, batch_size,
                                  self.stops.cuts_evaluation)
            if evaluation is None:
                self.interrupt(time.perf_counter() - started)
            if not math.isfinite(evaluation.loss):
                self.diverged(f"the {name} loss became {evaluation.loss}")
            short = "val" if name == "validation" else name
            record[f"{short}_loss"], record[f"{short}_acc"] = evaluation.loss, evaluation.accuracy
        record["lr"] = self.optimizer.lr
        record["seconds"] = round(self.seconds_before + time.perf_counter() - started, 3)
        stopping, watch = self.train_config.get("early_stopping"), self.early_stopping
        if stopping is not None:
            watch.count(record["val_acc"], stopping)
            record["stale_epochs"] = watch.stale_epochs
        self.metrics.append(record)
        self.epoch, self.step, self.seconds_before = self.epoch + 1, 0, 0.0
        self.stats.reset()
        # best.npz before last.npz: if a crash falls between them, the resumed run redoes this
        # epoch bit for bit and writes the same best.npz again.
        if record["val_acc"] is not None and record["val_acc"] > (self.best_val_acc or -1):
            self.best_val_acc = record["val_acc"]
            self.save(self.best_path)
        self.save()
        if self.ranks.is_root:
            write_metrics(self.run_dir, self.metrics)
            if watch.stopped and self.best_path.exists():
                mark_stopped_early(self.best_path, record["epoch"])
        self.echo(format_epoch(record, self.train_config["epochs"]))
        if watch.stopped:
            self.echo(watch.message(stopping, record["epoch"], self.train_config["epochs"]))
