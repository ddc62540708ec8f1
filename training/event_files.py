"""TensorBoard event files of a run's epoch records, written with tensorboardX (the optional
``tensorboard`` extra); without it, nothing is written. Each epoch is one step holding the
`SCALARS`; an event's wall time is the training seconds since the run began (TensorBoard's
"relative" axis).
"""
import os
from pathlib import Path

from xpnn.training.files import TEMP_SUFFIX, fsync_folder

EVENTS_NAME = "events.out.tfevents.xpnn"
SCALARS = {"loss/train": "train_loss", "loss/validation": "val_loss", "loss/test": "test_loss",
           "accuracy/train": "train_acc", "accuracy/validation": "val_acc",
           "accuracy/test": "test_acc", "lr": "lr", "seconds": "seconds"}


def writer_missing():
    """Why event files cannot be written here (tensorboardX is not installed), or None."""
    try:
        import tensorboardX  # noqa: F401
    except ImportError as error:
        return (f"tensorboardX is not installed ({error}); pip install 'xpnn[tensorboard]' "
                f"writes TensorBoard event files")
    return None


def write_events(run_dir, records):
    """Write run_dir/`EVENTS_NAME` from epoch `records` (metrics.jsonl's); returns its path, or
    None when tensorboardX is not installed."""
    if writer_missing() is not None:
        return None
    from tensorboardX.proto.event_pb2 import Event
    from tensorboardX.record_writer import RecordWriter
    from tensorboardX.summary import scalar

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
                    event = Event(wall_time=elapsed, step=record["epoch"],
                                  summary=scalar(tag, record[key]))
                    writer.write(event.SerializeToString())
        writer.flush()
    finally:
        writer.close()
    os.replace(temp, path)
    fsync_folder(run_dir)
    return path
