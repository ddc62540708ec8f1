"""The training loop: it learns, it is deterministic, and any crash or signal can be resumed from
to exactly the weights of an uninterrupted run."""
import csv
import importlib.util
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy
import pytest

from xpnn import nets
from xpnn.backend import CPU
from xpnn.data import load_dataset
from xpnn.training import evaluate, load_checkpoint, load_config, validate_config, read_metrics, resume_run, start_run
from xpnn.training.config import read_config
from xpnn.training.batches import epoch_permutation, num_batches, to_float
from xpnn.nets import ConfigError
from xpnn.training.errors import CheckpointError, DivergenceError
from xpnn.training.metrics import METRIC_KEYS, VALIDATION_KEYS, RunningStats
from xpnn.training.trainer import Trainer

REPO = Path(__file__).resolve().parent.parent
LENET = REPO / "configs" / "lenet.yaml"


def lenet(**train):
    """The lenet config with some train values changed."""
    return load_config(LENET, {f"train.{key}": value for key, value in train.items()})


def run_folder_files():
    """The sorted names of what a finished run with a validation set leaves in its folder."""
    from xpnn.training.metrics import EVENTS_NAME
    events = [EVENTS_NAME] if importlib.util.find_spec("tensorboardX") else []
    return sorted(["best.npz", "config.yaml", "last.npz", "metrics.csv", "metrics.jsonl",
                   *events])


def assert_same_run(dir_a, dir_b):
    """Same final weights (bit for bit), optimizer state, position and metrics (but time)."""
    for name in ("last.npz", "best.npz"):
        a, b = load_checkpoint(Path(dir_a) / name), load_checkpoint(Path(dir_b) / name)
        assert a.weights.keys() == b.weights.keys()
        for key in a.weights:
            assert a.weights[key].dtype == b.weights[key].dtype
            assert numpy.array_equal(a.weights[key], b.weights[key]), f"{name}: {key} differs"
        assert numpy.array_equal(a.optimizer["velocity"], b.optimizer["velocity"])
        assert a.optimizer["steps"] == b.optimizer["steps"]
        assert (a.epoch, a.step) == (b.epoch, b.step)
    strip = [lambda records: [{k: v for k, v in r.items() if k != "seconds"} for r in records]][0]
    assert strip(read_metrics(dir_a)) == strip(read_metrics(dir_b))


# -- pieces ---------------------------------------------------------------------------------------

def test_epoch_order_depends_only_on_seed_and_epoch():
    first = epoch_permutation(0, 0, 1000)
    assert sorted(first.tolist()) == list(range(1000)) and first.dtype == numpy.int64
    assert numpy.array_equal(first, epoch_permutation(0, 0, 1000))
    assert not numpy.array_equal(first, epoch_permutation(0, 1, 1000))
    assert not numpy.array_equal(first, epoch_permutation(1, 0, 1000))
    assert num_batches(1000, 300) == 4 and num_batches(900, 300) == 3


def test_evaluate_takes_floats_in_0_1_and_integers_as_it_takes_uint8():
    net = nets.build(lenet()["model"], seed=0)
    dataset = load_dataset("mnist")
    images, labels = dataset.test_images[:200], dataset.test_labels[:200]
    expected = evaluate(net, images, labels)
    for same in (images / 255, (images / 255).astype("float32"), images.astype("int64")):
        got = evaluate(net, same, labels)
        assert got.loss == pytest.approx(expected.loss, rel=1e-6)
        assert got.accuracy == expected.accuracy
        assert numpy.array_equal(got.predictions, expected.predictions)


@pytest.mark.parametrize("images, text", [
    (numpy.full((2, 1, 28, 28), 255.0), "got float64 values from 255 to 255 (divide 0-255 floats by 255)"),
    (numpy.full((2, 1, 28, 28), -0.5, "float32"), "got float32 values from -0.5 to -0.5"),
    (numpy.full((2, 1, 28, 28), 300), "got int64 values from 300 to 300"),
    (numpy.full((2, 1, 28, 28), numpy.nan), "got float64 values from nan to nan"),
    (numpy.zeros((2, 1, 28, 28), bool), "got dtype bool"),
], ids=["floats-0-255", "negative", "int-above-255", "nan", "bool"])
def test_evaluate_refuses_images_of_an_unknown_scale_in_one_line(images, text):
    net = nets.build(lenet()["model"], seed=0)
    with pytest.raises(ValueError) as error:
        evaluate(net, images, numpy.array([1, 2]))
    message = str(error.value)
    assert "\n" not in message and message.startswith(
        "images must be uint8 (or integers) on the 0-255 scale, or floats on the [0, 1] scale")
    assert text in message


def test_evaluate_refuses_labels_that_are_not_integers():
    net = nets.build(lenet()["model"], seed=0)
    with pytest.raises(ValueError, match="labels must be integer class indices, got dtype float64"):
        evaluate(net, numpy.zeros((2, 1, 28, 28), numpy.uint8), numpy.array([1.7, 2.2]))


def test_batches_become_float32_in_unit_range():
    images = numpy.array([[[[0, 255], [51, 102]]]], dtype=numpy.uint8)
    batch = to_float(images)
    assert batch.dtype == numpy.float32
    assert numpy.array_equal(batch, images.astype(numpy.float32) / numpy.float32(255))


# -- learning -------------------------------------------------------------------------------------

@pytest.mark.slow
def test_one_epoch_on_5000_images_exceeds_90_percent(tmp_path):
    lines = []
    trainer = start_run(lenet(epochs=1, batch_size=25), CPU, tmp_path / "run", limit_train=5000,
                        progress=False, echo=lines.append)
    metrics = trainer.fit()
    assert len(metrics) == 1 and len(trainer.evaluated["test"][1]) == 10000
    assert len(trainer.evaluated["validation"][1]) == 5000  # the default held-out count
    assert metrics[0]["test_acc"] > 0.90 and metrics[0]["val_acc"] > 0.90, metrics
    assert metrics[0]["train_loss"] < 1.0
    assert lines[0].startswith("epoch 1/1: train loss") and "| val loss" in lines[0]
    assert "| test loss" in lines[0]
    records = read_metrics(tmp_path / "run")
    assert records == json.loads(json.dumps(metrics))
    assert set(records[0]) == set(METRIC_KEYS) | set(VALIDATION_KEYS)
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == run_folder_files()


# -- exact resume after a crash at any step (in process) --------------------------------------------

SMALL = dict(limit_train=300, limit_test=100, checkpoint_every=4, progress=False,
             echo=lambda line: None)


class Crash(Exception):
    """Stands for a process dying: nothing after it runs."""


def crash_after_steps(monkeypatch, steps):
    original = Trainer.train_step
    done = {"steps": 0}

    def step(self, *args):
        if done["steps"] == steps:
            raise Crash
        done["steps"] += 1
        return original(self, *args)

    monkeypatch.setattr(Trainer, "train_step", step)
    return lambda: monkeypatch.setattr(Trainer, "train_step", original)


@pytest.fixture(scope="module")
def small_reference(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    start_run(lenet(epochs=2, batch_size=20), CPU, run_dir, **SMALL).fit()
    return run_dir


@pytest.mark.parametrize("crash_at, saved_at", [(0, (0, 0)), (6, (0, 4)), (15, (1, 0)),
                                               (22, (1, 5))])
def test_resume_after_crash_gives_bit_identical_weights(tmp_path, monkeypatch, small_reference,
                                                        crash_at, saved_at):
    # 15 steps per epoch and a checkpoint every 4 (global) steps: crashes before any step,
    # mid-epoch, at the start of epoch 2 and in the middle of it.
    run_dir = tmp_path / "run"
    undo = crash_after_steps(monkeypatch, crash_at)
    with pytest.raises(Crash):
        start_run(lenet(epochs=2, batch_size=20), CPU, run_dir, **SMALL).fit()
    undo()
    assert position(run_dir) == saved_at
    resume_run(run_dir, CPU, progress=False, echo=lambda line: None).fit()
    assert_same_run(small_reference, run_dir)


def test_resume_of_an_augmented_run_is_bit_identical(tmp_path, monkeypatch):
    # every transform and label smoothing on: the transforms of step 9 are drawn again, after
    # the resume, from (seed, epoch, step) alone
    config = load_config(LENET, {"train.epochs": 2, "train.batch_size": 20,
                                 "train.label_smoothing": 0.1,
                                 "data.augment": {"translate": 2, "rotate": 10, "scale": 0.1,
                                                  "shear": 10}})
    start_run(config, CPU, tmp_path / "reference", **SMALL).fit()
    undo = crash_after_steps(monkeypatch, 22)
    with pytest.raises(Crash):
        start_run(config, CPU, tmp_path / "run", **SMALL).fit()
    undo()
    resume_run(tmp_path / "run", CPU, progress=False, echo=lambda line: None).fit()
    assert_same_run(tmp_path / "reference", tmp_path / "run")


@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_resume_of_an_adam_run_is_bit_identical(tmp_path, monkeypatch, optimizer):
    """Adam's moments and step count travel in the checkpoint: a run crashed mid-epoch and
    resumed ends with the uninterrupted run's weights and state, bit for bit."""
    raw = read_config(LENET)
    raw["train"] = {"epochs": 2, "batch_size": 20, "optimizer": optimizer, "lr": 0.002,
                    "betas": [0.85, 0.995], "weight_decay": 0.05,
                    "schedule": {"name": "cosine", "warmup_epochs": 0.2}}
    config = validate_config(raw)
    start_run(config, CPU, tmp_path / "reference", **SMALL).fit()
    undo = crash_after_steps(monkeypatch, 22)
    with pytest.raises(Crash):
        start_run(config, CPU, tmp_path / "run", **SMALL).fit()
    undo()
    assert position(tmp_path / "run") == (1, 5)
    resume_run(tmp_path / "run", CPU, progress=False, echo=lambda line: None).fit()
    a, b = (load_checkpoint(tmp_path / name / "last.npz") for name in ("reference", "run"))
    assert a.config["train"]["optimizer"] == optimizer and a.optimizer["steps"] == 30
    for key in a.weights:
        assert numpy.array_equal(a.weights[key], b.weights[key]), key
    for key in ("exp_avg", "exp_avg_sq"):
        assert a.optimizer[key].any() and numpy.array_equal(a.optimizer[key], b.optimizer[key])
    assert a.optimizer["steps"] == b.optimizer["steps"]
    metrics = read_metrics(tmp_path / "reference")
    assert metrics[-1]["test_acc"] > 0.5  # it learns


def test_metrics_csv_holds_the_records_of_metrics_jsonl(small_reference):
    records = read_metrics(small_reference)
    with (small_reference / "metrics.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["epoch", "train_loss", "train_acc", "val_loss", "val_acc",
                             "test_loss", "test_acc", "lr", "seconds"]
    assert len(rows) == len(records) == 2
    for row, record in zip(rows, records):
        assert {key: float(value) for key, value in row.items()} == {
            key: float(record[key]) for key in row}


def test_tensorboard_reads_back_a_resumed_runs_events_once_per_epoch(tmp_path, monkeypatch):
    """The event file is rewritten whole from the records after each epoch: after a crash and
    a resume, TensorBoard's own reader finds every scalar of every epoch once."""
    pytest.importorskip("tensorboardX", reason="the tensorboard extra (tensorboardX) is not "
                        "installed: no event files are written")
    accumulator = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator",
        reason="tensorboard (the reader, in the dev extra) is not installed")
    undo = crash_after_steps(monkeypatch, 22)
    with pytest.raises(Crash):
        start_run(lenet(epochs=2, batch_size=20), CPU, tmp_path / "run", **SMALL).fit()
    undo()
    resume_run(tmp_path / "run", CPU, progress=False, echo=lambda line: None).fit()
    records = read_metrics(tmp_path / "run")
    assert [path.name for path in (tmp_path / "run").iterdir() if "tfevents" in path.name] == [
        "events.out.tfevents.xpnn"]
    events = accumulator.EventAccumulator(str(tmp_path / "run"))
    events.Reload()
    assert sorted(events.Tags()["scalars"]) == sorted([
        "loss/train", "loss/validation", "loss/test", "accuracy/train", "accuracy/validation",
        "accuracy/test", "lr", "seconds"])
    for tag, key in (("accuracy/test", "test_acc"), ("loss/validation", "val_loss"),
                     ("lr", "lr")):
        scalars = events.Scalars(tag)
        assert [event.step for event in scalars] == [1, 2]
        assert [event.value for event in scalars] == pytest.approx(
            [record[key] for record in records], rel=1e-6)  # stored as float32
    elapsed = [event.wall_time for event in events.Scalars("seconds")]
    assert elapsed == pytest.approx([records[0]["seconds"],
                                     records[0]["seconds"] + records[1]["seconds"]])


def test_without_tensorboardx_no_event_file_is_written(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # makes the import fail
    start_run(lenet(epochs=1, batch_size=50), CPU, tmp_path / "run", **SMALL).fit()
    assert (tmp_path / "run" / "metrics.csv").exists()
    assert not [path for path in (tmp_path / "run").iterdir() if "tfevents" in path.name]


def test_resume_with_two_worker_threads_is_bit_identical(tmp_path, monkeypatch):
    config = lenet(epochs=1, batch_size=20)
    options = dict(SMALL, workers=2)
    start_run(config, CPU, tmp_path / "reference", **options).fit()
    undo = crash_after_steps(monkeypatch, 7)
    with pytest.raises(Crash):
        start_run(config, CPU, tmp_path / "run", **options).fit()
    undo()
    resumed = resume_run(tmp_path / "run", CPU, progress=False, echo=lambda line: None)
    assert resumed.workers == 2
    resumed.fit()
    assert_same_run(tmp_path / "reference", tmp_path / "run")


def crash_in_evaluation(monkeypatch):
    def evaluate(*args, **kwargs):
        raise Crash
    monkeypatch.setattr("xpnn.training.trainer.evaluate", evaluate)


def crash_after_best(monkeypatch):
    original = Trainer.save

    def save(self, path=None, seconds=0.0):
        if path is None and self.best_path.exists():
            raise Crash
        return original(self, path, seconds)
    monkeypatch.setattr(Trainer, "save", save)


def crash_before_metrics(monkeypatch):
    def write_metrics(*args):
        raise Crash
    monkeypatch.setattr("xpnn.training.trainer.write_metrics", write_metrics)


@pytest.mark.parametrize("crash, saved_at", [(crash_in_evaluation, (0, 12)),
                                             (crash_after_best, (0, 12)),
                                             (crash_before_metrics, (1, 0))])
def test_resume_after_crash_at_end_of_epoch_gives_bit_identical_weights(
        tmp_path, monkeypatch, small_reference, crash, saved_at):
    run_dir = tmp_path / "run"
    with monkeypatch.context() as patch:
        crash(patch)
        with pytest.raises(Crash):
            start_run(lenet(epochs=2, batch_size=20), CPU, run_dir, **SMALL).fit()
    assert position(run_dir) == saved_at
    resume_run(run_dir, CPU, progress=False, echo=lambda line: None).fit()
    assert_same_run(small_reference, run_dir)


def test_resume_refuses_changed_dataset_size(tmp_path, monkeypatch, small_reference):
    run_dir = tmp_path / "run"
    undo = crash_after_steps(monkeypatch, 5)
    with pytest.raises(Crash):
        start_run(lenet(epochs=2, batch_size=20), CPU, run_dir, **SMALL).fit()
    undo()
    checkpoint_path = run_dir / "last.npz"
    with numpy.load(checkpoint_path) as archive:
        entries = dict(archive)
    meta = json.loads(entries["meta"].item())
    meta["train_count"] = 299
    entries["meta"] = numpy.array(json.dumps(meta))
    numpy.savez(checkpoint_path, **entries)
    with pytest.raises(CheckpointError, match="trained on 299 images"):
        resume_run(run_dir, CPU, progress=False)


def test_running_stats_sum_loss_and_correct_predictions(device):
    logits = numpy.array([[0.1, 2.0, -1.0], [3.0, 0.0, 0.5], [0.0, 0.2, 0.1], [1.0, 1.0, 0.0]])
    labels = numpy.array([1, 2, 1, 0])  # right, wrong, right, right (ties go to the first)
    stats = RunningStats(device.xp, loss_sum=1.5, correct=2, seen=10)
    for dtype in ("float32", "float64"):
        stats.add(device.send(numpy.asarray(0.25, dtype=dtype)),
                  device.send(logits.astype(dtype)), device.send(labels))
    assert stats.read() == (1.5 + 2 * 0.25 * 4, 2 + 2 * 3, 18)



def test_running_stats_count_a_nan_logit_as_argmax_does(device):
    """One NaN rule on every path: a row holding NaN predicts its first NaN (numpy.argmax)."""
    nan = numpy.nan
    logits = numpy.array([[nan, 5.0, 1.0], [0.0, nan, 9.0], [1.0, 2.0, nan], [nan, nan, 0.0],
                          [1.0, 3.0, 2.0]])
    labels = numpy.array([0, 1, 2, 1, 1])
    assert (logits.argmax(axis=1) == labels).sum() == 4  # all but row 3
    stats = RunningStats(device.xp)
    stats.add(device.send(numpy.asarray(0.5)), device.send(logits), device.send(labels))
    assert stats.read()[1:] == (4, 5)

def test_training_with_emulated_fused_kernels_follows_the_cpu_run(tmp_path, small_reference):
    """The whole training path with the fused CUDA kernels, run on the CPU (see
    tests/cuda_emulation.py): the weights end where the array code's do."""
    import cuda_emulation
    reason = cuda_emulation.unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    with cuda_emulation.emulating():
        start_run(lenet(epochs=2, batch_size=20), CPU, tmp_path / "run", **SMALL).fit()
    ours, reference = load_checkpoint(tmp_path / "run" / "last.npz"), load_checkpoint(
        small_reference / "last.npz")
    for name, weight in reference.weights.items():
        numpy.testing.assert_allclose(ours.weights[name], weight, rtol=1e-4, atol=1e-5,
                                      err_msg=name)
    assert read_metrics(tmp_path / "run")[-1]["train_acc"] == pytest.approx(
        read_metrics(small_reference)[-1]["train_acc"], abs=0.01)


@pytest.mark.gpu
@pytest.mark.parametrize("fused", [False, True], ids=["array-code", "fused-kernels"])
def test_training_on_gpu_follows_the_cpu_run(tmp_path, small_reference, fused):
    from xpnn.backend import Mode, get_device, gpu_unavailable_reason
    reason = gpu_unavailable_reason()
    if reason is not None:
        pytest.skip(f"no usable GPU: {reason}")
    run_dir = tmp_path / "gpu"
    gpu = get_device("gpu")
    mode = Mode("fused" if fused else None)  # eager: the graph has its own test
    trainer = start_run(lenet(epochs=2, batch_size=20), gpu, run_dir, mode=mode, **SMALL)
    trainer.fit()
    cpu, gpu = load_checkpoint(small_reference / "last.npz"), load_checkpoint(run_dir / "last.npz")
    for name, weight in cpu.weights.items():
        numpy.testing.assert_allclose(gpu.weights[name], weight, rtol=1e-3, atol=1e-4,
                                      err_msg=name)
    resumed = resume_run(run_dir, CPU, progress=False)  # a GPU checkpoint loads on the CPU
    assert numpy.array_equal(CPU.to_numpy(resumed.net.state_dict()["layers.0.weight"]),
                             gpu.weights["layers.0.weight"])


# -- divergence -----------------------------------------------------------------------------------

def test_nan_loss_stops_without_saving_poisoned_weights(tmp_path):
    run_dir = tmp_path / "run"
    trainer = start_run(lenet(epochs=1, batch_size=20, lr=1e6), CPU, run_dir, limit_train=400,
                        limit_test=100, checkpoint_every=1, progress=False)
    with pytest.raises(DivergenceError, match=r"training diverged: .*(nan|inf).*last good "
                                              r"checkpoint .*last\.npz is unchanged") as caught:
        trainer.fit()
    assert "\n" not in str(caught.value)
    good = load_checkpoint(run_dir / "last.npz")
    assert all(numpy.isfinite(w).all() for w in good.weights.values())
    assert numpy.isfinite(good.optimizer["velocity"]).all()
    assert good.epoch == 0 and good.step < 20
    assert not (run_dir / "metrics.jsonl").exists() and not (run_dir / "best.npz").exists()


# -- real processes: SIGKILL, SIGINT, SIGTERM ------------------------------------------------------

CLI_ARGS = ["-c", str(LENET), "--epochs", "2", "--batch-size", "10", "--limit-train", "600",
            "--limit-test", "100", "--checkpoint-every", "3", "--no-progress"]


def cli(*args):
    return [sys.executable, str(REPO / "run.py"), "train", *args]


def run_to_end(args, log_path):
    with open(log_path, "w") as log:
        completed = subprocess.run(cli(*args), cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                   timeout=300)
    assert completed.returncode == 0, Path(log_path).read_text()


def position(run_dir):
    """(epoch, step) of run_dir/last.npz, or None while there is none."""
    try:
        checkpoint = load_checkpoint(Path(run_dir) / "last.npz")
    except CheckpointError:
        return None
    return checkpoint.epoch, checkpoint.step


def start_and_wait(args, run_dir, log_path, after):
    """Start `run.py train args` and wait until its last.npz is past position `after`."""
    log = open(log_path, "a")
    process = subprocess.Popen(cli(*args), cwd=REPO, stdout=log, stderr=log)
    deadline = time.monotonic() + 120
    while True:
        where = position(run_dir)
        if where is not None and where > after and where[1] > 0:
            return process, log, where
        if process.poll() is not None:
            raise AssertionError(f"run ended before it could be stopped: "
                                 f"{Path(log_path).read_text()}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError("no mid-epoch checkpoint within 120 s")
        time.sleep(0.01)


@pytest.fixture(scope="module")
def cli_reference(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("cli-reference") / "run"
    run_to_end([*CLI_ARGS, "--output", str(run_dir)], run_dir.parent / "log.txt")
    return run_dir


@pytest.mark.slow
def test_sigkill_at_any_moment_then_resume_is_bit_identical(tmp_path, cli_reference):
    run_dir, log_path = tmp_path / "run", tmp_path / "log.txt"
    rng = numpy.random.default_rng(2)  # where between checkpoints the second kill falls
    process, log, seen = start_and_wait([*CLI_ARGS, "--output", str(run_dir)], run_dir, log_path,
                                        after=(0, 0))
    process.kill()  # mid-epoch: a mid-epoch checkpoint (`seen`) exists
    assert process.wait() == -signal.SIGKILL
    log.close()
    first = position(run_dir)
    assert first >= seen and seen[1] > 0

    # Resume, and kill that one as well, in the second epoch.
    process, log, _ = start_and_wait(["--resume", str(run_dir), "--no-progress"], run_dir,
                                     log_path, after=max(first, (1, 0)))
    time.sleep(rng.uniform(0, 0.2))  # somewhere between checkpoints, or inside a write
    process.kill()
    assert process.wait() == -signal.SIGKILL
    log.close()

    run_to_end(["--resume", str(run_dir), "--no-progress"], log_path)
    assert_same_run(cli_reference, run_dir)
    assert not list(run_dir.glob(".*")), "temporary files were left behind"


@pytest.mark.slow
@pytest.mark.parametrize("signal_number, exit_code", [(signal.SIGINT, 130),
                                                      (signal.SIGTERM, 143)])
def test_sigint_saves_and_exits_then_resumes_bit_identical(tmp_path, cli_reference,
                                                           signal_number, exit_code):
    run_dir, log_path = tmp_path / "run", tmp_path / "log.txt"
    process, log, seen = start_and_wait([*CLI_ARGS, "--output", str(run_dir)], run_dir, log_path,
                                        after=(0, 0))
    process.send_signal(signal_number)
    assert process.wait(timeout=60) == exit_code
    log.close()
    output = log_path.read_text()
    assert "Traceback" not in output
    name = signal.Signals(signal_number).name
    message = [line for line in output.splitlines() if line.startswith(f"{name}:")]
    assert len(message) == 1 and f"--resume {run_dir}" in message[0], output
    stopped = position(run_dir)
    assert stopped >= seen
    assert f"epoch {stopped[0] + 1} step {stopped[1]}/60" in message[0]

    run_to_end(["--resume", str(run_dir), "--no-progress"], log_path)
    assert_same_run(cli_reference, run_dir)


@pytest.mark.slow
def test_cli_reference_run_wrote_two_epochs(cli_reference):
    records = read_metrics(cli_reference)
    assert [r["epoch"] for r in records] == [1, 2]
    assert all(math.isfinite(r["train_loss"]) and 0 <= r["test_acc"] <= 1 for r in records)
    assert records[1]["lr"] < records[0]["lr"]  # cosine decay
    assert os.path.exists(cli_reference / "config.yaml")


def test_a_run_from_before_the_validation_split_resumes_holding_nothing_out(tmp_path):
    # such a checkpoint's config has no data.validation; the default (5,000) would change the
    # training set under it
    config = lenet(epochs=2, batch_size=20)
    config["data"]["validation"] = 0
    run_dir = tmp_path / "run"
    trainer = start_run(config, CPU, run_dir, **SMALL)
    trainer.save()
    import dataclasses
    from xpnn.training.checkpoint import save_checkpoint
    checkpoint = load_checkpoint(run_dir / "last.npz")
    old_config = json.loads(json.dumps(checkpoint.config))
    del old_config["data"]["validation"], old_config["data"]["augment"]
    save_checkpoint(run_dir / "last.npz", trainer.net, trainer.optimizer,
                    state=dataclasses.replace(checkpoint.state, config=old_config))
    resumed = resume_run(run_dir, CPU, progress=False, echo=lambda line: None)
    assert resumed.config["data"]["validation"] == 0 and resumed.train_count == 300



def test_checking_a_config_draws_no_weight_and_a_resume_builds_the_network_once(tmp_path,
                                                                                monkeypatch):
    from xpnn import nets
    run_dir = tmp_path / "run"
    start_run(lenet(epochs=2, batch_size=50), CPU, run_dir, **SMALL).save()
    with monkeypatch.context() as patch:
        for module in ("xpnn.layers.conv", "xpnn.layers.linear"):
            patch.setattr(f"{module}.new_rng", lambda rng: pytest.fail("weights were drawn"))
        config = lenet(epochs=2, batch_size=50)
        with pytest.raises(ConfigError, match=r"model.layers\[7\] LinearLayer cannot take"):
            load_config(LENET, {"model.layers.7.in_features": 100})
    built = []
    real_build = nets.build
    monkeypatch.setattr(nets, "build", lambda *args, **kw: built.append(1) or real_build(*args,
                                                                                         **kw))
    resume_run(run_dir, CPU, config=config, progress=False, echo=lambda line: None)
    assert len(built) == 1
