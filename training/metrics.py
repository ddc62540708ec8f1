"""Loss and accuracy: running sums kept on the device, evaluation, the metrics files.

metrics.jsonl in a run folder holds one JSON object per finished epoch, with `CSV_COLUMNS`.
Accuracies are fractions; `lr` is the rate at the epoch's last step; val_loss and val_acc are
null without a validation set (absent in runs made before it); with label smoothing every loss
is the smoothed one. metrics.csv holds the same records (empty where null), and `EVENTS_NAME`
the same as TensorBoard events (with tensorboardX), one step per epoch, at a wall time of the
training seconds since the run began.
"""
import csv
import io
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy

from xpnn.backend import CPU, get_array_module
from xpnn.backend.batch_stats import add_batch_stats
from xpnn.backend.graphs import forbid_host_sync
from xpnn.training.batches import to_float
from xpnn.training.files import TEMP_SUFFIX, atomic_write, fsync_folder

METRICS_NAME = "metrics.jsonl"
CSV_NAME = "metrics.csv"
CSV_COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc",
               "lr", "seconds")
METRIC_KEYS = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "lr", "seconds")
VALIDATION_KEYS = ("val_loss", "val_acc")  # optional: null without a validation set
EVENTS_NAME = "events.out.tfevents.xpnn"
SCALARS = {"loss/train": "train_loss", "loss/validation": "val_loss", "loss/test": "test_loss",
           "accuracy/train": "train_acc", "accuracy/validation": "val_acc",
           "accuracy/test": "test_acc", "lr": "lr", "seconds": "seconds"}
READ_EVERY = 20  # steps between reads of the running loss (each read waits for the device)
# Evaluation batches: large on a GPU (fewer launches); small on the CPU, where larger cost memory.
EVAL_BATCH_SIZE = {"cpu": 200, "gpu": 1000}


def shows_progress_after(step, steps):
    """Whether the running loss is read (a device sync; on ranks a collective) after `step` of
    an epoch of `steps`: at powers of 2, every `READ_EVERY` steps and at the epoch's end."""
    return step % READ_EVERY == 0 or step == steps or (step < READ_EVERY
                                                       and step & (step - 1) == 0)


class RunningStats:
    """Sums of loss and correct predictions over an epoch, kept on the device; `read()` is the
    one place that waits for the device."""

    def __init__(self, xp, loss_sum=0.0, correct=0, seen=0):
        self.loss_sum = xp.asarray(loss_sum, dtype=xp.float64)
        self.correct = xp.asarray(correct, dtype=xp.int64)
        self.seen = int(seen)

    def reset(self, loss_sum=0.0, correct=0, seen=0):
        """Start again from these sums, in place (a captured step writes the same arrays)."""
        self.loss_sum.fill(loss_sum)
        self.correct.fill(correct)
        self.seen = int(seen)

    def add(self, loss, logits, labels):
        """Add one batch: its mean `loss` (0-d), `logits` (N, K) and `labels` (N,)."""
        add_batch_stats(self.loss_sum, self.correct, loss, logits, labels)
        self.seen += labels.shape[0]

    def read(self):
        """Return (loss sum, correct count, images seen) as Python numbers (a host sync)."""
        forbid_host_sync("reading the running loss")
        return float(self.loss_sum), int(self.correct), self.seen


@dataclass
class Evaluation:
    """Mean loss and accuracy on a set of images, and the predicted class of each (host int64)."""
    loss: float
    accuracy: float
    predictions: numpy.ndarray


def evaluate(net, images, labels, batch_size=1000, should_stop=None):
    """Evaluate `net` on `images` (N, C, H, W) and integer `labels` (N,), on their device.

    Images are integers on the 0-255 scale or floats on the [0, 1] scale; anything else is a
    `ValueError` (`network_input`). `should_stop()`, if given, is asked between batches; when
    it returns True, None is returned.
    """
    xp = get_array_module(images)
    to_network = network_input(images)
    stats, predictions = RunningStats(xp), []
    for start in range(0, labels.shape[0], batch_size):
        if should_stop is not None and should_stop():
            return None
        batch_labels = labels[start:start + batch_size]
        loss, logits = net.forward_loss(to_network(images[start:start + batch_size]), batch_labels)
        stats.add(loss, logits, batch_labels)
        predictions.append(logits.argmax(axis=1))
    loss_sum, correct, seen = stats.read()
    loss, accuracy = (loss_sum / seen, correct / seen) if seen else (math.nan, math.nan)
    return Evaluation(loss, accuracy,
                      CPU.to_numpy(xp.concatenate(predictions)).astype(numpy.int64))


def network_input(images):
    """The conversion that makes batches of `images` what a network sees (float32 in [0, 1]),
    after checking their dtype and scale (floats and wide integers: one look at their range);
    `ValueError` naming what was given and what is accepted."""
    kind = images.dtype.kind
    if images.dtype == numpy.uint8:
        return to_float
    accepted = ("images must be uint8 (or integers) on the 0-255 scale, or floats on the [0, 1] "
                "scale")
    if kind not in "iuf":
        raise ValueError(f"{accepted}; got dtype {images.dtype}")
    low, high = (float(images.min()), float(images.max())) if images.size else (0.0, 0.0)
    if kind == "f" and 0 <= low and high <= 1:
        return _as_float32
    if kind in "iu" and 0 <= low and high <= 255:
        return to_float
    hint = " (divide 0-255 floats by 255)" if kind == "f" and 0 <= low and high <= 255 else ""
    raise ValueError(f"{accepted}; got {images.dtype} values from {low:g} to {high:g}{hint}")


def _as_float32(images):
    return images.astype(get_array_module(images).float32, copy=False)


def confusion_matrix(labels, predictions, num_classes):
    """(num_classes, num_classes) int64 counts: row = true class, column = predicted class."""
    labels = numpy.asarray(labels, dtype=numpy.int64)
    predictions = numpy.asarray(predictions, dtype=numpy.int64)
    flat = numpy.bincount(labels * num_classes + predictions, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


def format_confusion(matrix, class_names=None):
    """The confusion matrix as text: a header of predicted classes, one row per true class."""
    size = matrix.shape[0]
    names = [str(name) for name in (class_names or range(size))]
    label_width = max(len("true \\ pred"), *(len(name) for name in names))
    cell = max(5, len(str(int(matrix.max()))) + 1, *(len(name[:8]) + 1 for name in names))
    lines = ["true \\ pred".ljust(label_width) + "".join(name[:8].rjust(cell) for name in names)]
    for name, row in zip(names, matrix):
        lines.append(name.ljust(label_width) + "".join(str(int(v)).rjust(cell) for v in row))
    return "\n".join(lines)


def format_epoch(record, total_epochs):
    """One line summing up a finished epoch (a `METRIC_KEYS` record, with `VALIDATION_KEYS`)."""
    parts = [f"{label} loss {record[f'{key}_loss']:.4f} acc {100 * record[f'{key}_acc']:.2f}%"
             for key, label in (("train", "train"), ("val", "val"), ("test", "test"))
             if record.get(f"{key}_acc") is not None]
    return (f"epoch {record['epoch']}/{total_epochs}: {' | '.join(parts)} | "
            f"lr {record['lr']:.4g} | {record['seconds']:.1f}s")


def best_epoch(records):
    """The record of the epoch validation chose (highest val_acc, the earliest of ties), or
    None when the records have no validation accuracy."""
    scored = [record for record in records if record.get("val_acc") is not None]
    return max(scored, key=lambda record: record["val_acc"]) if scored else None


def write_metrics(run_dir, records):
    """Write all epoch records to run_dir/metrics.jsonl, metrics.csv and (with tensorboardX)
    TensorBoard's event file, each atomically: a file is always whole."""
    text = "".join(json.dumps(record) + "\n" for record in records)
    atomic_write(Path(run_dir) / METRICS_NAME, lambda f: f.write(text), binary=False)
    table = io.StringIO()  # None and absent keys: empty cells
    writer = csv.DictWriter(table, CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    atomic_write(Path(run_dir) / CSV_NAME, lambda f: f.write(table.getvalue()), binary=False)
    write_events(run_dir, records)


def write_events(run_dir, records):
    """Write run_dir/`EVENTS_NAME` from epoch `records`; returns its path, or None when
    tensorboardX is not installed."""
    try:
        from tensorboardX import RecordWriter
        from tensorboardX.proto.event_pb2 import Event
        from tensorboardX.summary import scalar
    except ImportError:
        return None
    run_dir = Path(run_dir)
    path, temp = run_dir / EVENTS_NAME, run_dir / f".{EVENTS_NAME}{TEMP_SUFFIX}"
    writer = RecordWriter(str(temp))
    try:
        writer.write(Event(wall_time=0.0, step=0, file_version="brain.Event:2")
                     .SerializeToString())
        elapsed = 0.0
        for record in records:
            elapsed += record["seconds"]
            for tag, key in SCALARS.items():
                if record.get(key) is not None:
                    writer.write(Event(wall_time=elapsed, step=record["epoch"],
                                       summary=scalar(tag, record[key])).SerializeToString())
        writer.flush()
    finally:
        writer.close()
    os.replace(temp, path)
    fsync_folder(run_dir)
    return path


def read_metrics(run_dir):
    """Read the epoch records of run_dir/metrics.jsonl; `ValueError` naming a malformed line."""
    path = Path(run_dir) / METRICS_NAME
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as error:
            raise ValueError(f"{path} line {number} is not JSON: {error}") from None
        missing = [key for key in METRIC_KEYS if not isinstance(record, dict) or key not in record]
        if missing:
            raise ValueError(f"{path} line {number} lacks {', '.join(missing)}")
        records.append(record)
    return records
