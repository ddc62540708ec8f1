"""Several seeds of one config, one run after another in one parent folder, summed up as
mean +- sd of test accuracy (of the epoch validation chose, and of the last epoch).

    results = run_seeds(config, device, "runs/resnet-seeds", parse_seeds("0-4"))
    print(format_seeds(results))
"""
import json
import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from xpnn.backend.communicator import world
from xpnn.nets.config import ConfigError
from xpnn.training.checkpoint import LAST_NAME
from xpnn.training.files import atomic_write
from xpnn.training.metrics import best_epoch
from xpnn.training.runs import resume_run, start_run

SUMMARY_NAME = "seeds.json"
MOST_SEEDS = 1000


@dataclass
class SeedResult:
    """One seed's run: its folder, epochs trained, the epoch validation chose (None without
    validation) with its validation and test accuracy, and the last epoch's test accuracy."""
    seed: int
    run_dir: str
    epochs: int
    best_epoch: int
    best_val_acc: float
    best_test_acc: float
    last_test_acc: float


def parse_seeds(text):
    """The seeds `text` names: ``0-4`` (both ends included), ``0,3,7`` or a mix; `ConfigError`
    in one line for anything else."""
    seeds = []
    for part in str(text).split(","):
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not match:
            raise ConfigError(f"--seeds takes seeds like 0-4 or 0,3,7 (whole numbers >= 0), got "
                              f"{text!r}")
        low, high = int(match[1]), int(match[2] or match[1])
        if high < low:
            raise ConfigError(f"--seeds {text!r}: the range {low}-{high} is empty; write the "
                              f"lower seed first ({high}-{low})")
        seeds.extend(range(low, min(high, low + MOST_SEEDS) + 1))
    if len(seeds) != len(set(seeds)) or len(seeds) > MOST_SEEDS:
        raise ConfigError(f"--seeds {text!r} names a seed twice or more than {MOST_SEEDS} seeds")
    return seeds


def run_seeds(config, device, parent, seeds, echo=print, **options):
    """Train `config` once per seed of `seeds` into PARENT/seed-K (`start_run`'s `options`),
    resuming a seed's run that is there already; return the `SeedResult`s, also written to
    PARENT/seeds.json (by rank 0)."""
    parent = Path(parent)
    ranks = options.get("ranks") or world(device)
    options = {**options, "ranks": ranks}
    resumed = {key: value for key, value in options.items()
               if key in ("data_dir", "checkpoint_every", "workers", "ranks", "progress", "mode")}
    results = []
    for seed in seeds:
        run_dir = parent / f"seed-{seed}"
        seeded = {**config, "train": {**config["train"], "seed": seed}}
        if ranks.on_root((run_dir / LAST_NAME).exists):
            trainer = resume_run(run_dir, device, config=seeded, echo=echo, **resumed)
            echo(f"seed {seed}: {run_dir} " + ("is finished" if trainer.finished else
                                               f"resumes at epoch {trainer.epoch + 1}"))
        else:
            trainer = start_run(seeded, device, run_dir, echo=echo, **options)
            echo(f"seed {seed}: run folder {run_dir}")
        records = trainer.fit()
        best, last = best_epoch(records), records[-1]
        results.append(SeedResult(seed, str(run_dir), len(records), best and best["epoch"],
                                  best and best["val_acc"], best and best["test_acc"],
                                  last["test_acc"]))
    if ranks.is_root:
        atomic_write(parent / SUMMARY_NAME, lambda f: json.dump(
            {"seeds": [asdict(result) for result in results], **summary(results)}, f, indent=1),
            binary=False)
    return results


def mean_sd(values):
    """(mean, sample standard deviation (n - 1); 0 for one value) of `values`, or None if any
    is None."""
    if not values or any(value is None for value in values):
        return None
    mean = sum(values) / len(values)
    if len(values) == 1:
        return mean, 0.0
    return mean, math.sqrt(sum((value - mean) ** 2 for value in values) / (len(values) - 1))


def summary(results):
    """{"best": (mean, sd) or None, "last": (mean, sd), "count": n} of test accuracies."""
    return {"best": mean_sd([result.best_test_acc for result in results]),
            "last": mean_sd([result.last_test_acc for result in results]),
            "count": len(results)}


def format_seeds(results):
    """A table of the seeds' runs and the mean +- sd lines, as text."""
    rows = [("seed", "epochs", "best epoch", "val acc", "test acc (best)", "test acc (last)")]
    for result in results:
        best = "-" if result.best_epoch is None else str(result.best_epoch)
        rows.append((str(result.seed), str(result.epochs), best, _percent(result.best_val_acc),
                     _percent(result.best_test_acc), _percent(result.last_test_acc)))
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    lines = ["  ".join(cell.rjust(width) for cell, width in zip(row, widths)) for row in rows]
    totals = summary(results)
    for key, what in (("best", "best (validation-chosen)"), ("last", "last epoch")):
        value = totals[key]
        lines.append(f"test accuracy, {what}: " + (
            "no validation set" if value is None else
            f"{100 * value[0]:.2f} ± {100 * value[1]:.2f}% (mean ± sd over "
            f"{totals['count']} seed{'s' if totals['count'] > 1 else ''})"))
    return "\n".join(lines)


def _percent(value):
    return "-" if value is None else f"{100 * value:.2f}%"
