"""Checkpoints: exact round trips, atomic writes, and refusal of files that do not fit."""
import copy
import json
import os
import zipfile
from pathlib import Path

import numpy
import pytest
import yaml

from xpnn import nets
from xpnn.optim import MomentumSGDOptimizer
from xpnn.training.checkpoint import (FORMAT_VERSION, check_matches, load_checkpoint, restore,
                                 save_checkpoint)
from xpnn.training.errors import CheckpointError
from xpnn.training.files import TEMP_SUFFIX, atomic_write, remove_stale_temporaries
from xpnn.training.run_state import RunState

REPO = Path(__file__).resolve().parent.parent


def model_config(name="lenet"):
    return yaml.safe_load((REPO / "configs" / f"{name}.yaml").read_text())["model"]


def trained_pair(seed=0, steps=2):
    """A lenet and its momentum optimizer after `steps` steps on a fixed random batch."""
    net = nets.build(model_config(), seed=seed)
    optimizer = MomentumSGDOptimizer(net.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    rng = numpy.random.default_rng(seed)
    images = rng.random((8, 1, 28, 28), dtype=numpy.float32)
    labels = rng.integers(0, 10, 8)
    for _ in range(steps):
        optimizer.zero_grad()
        net.forward_loss(images, labels)
        net.backward()
        optimizer.step()
    return net, optimizer, images


STATE = RunState({"model": "anything JSON"}, epoch=1, step=17,
                 metrics=[{"epoch": 1, "test_acc": 0.5}])


def test_round_trip_restores_identical_outputs_and_optimizer_state(tmp_path):
    net, optimizer, images = trained_pair()
    path = tmp_path / "last.npz"
    save_checkpoint(path, net, optimizer, state=STATE)

    fresh, fresh_optimizer, _ = trained_pair(seed=5, steps=0)
    checkpoint = load_checkpoint(path)
    restore(checkpoint, fresh, fresh_optimizer)

    assert numpy.array_equal(fresh.forward(images), net.forward(images))
    for (name, a), (_, b) in zip(net.state_dict().items(), fresh.state_dict().items()):
        assert a.dtype == b.dtype and numpy.array_equal(a, b), name
    assert numpy.array_equal(fresh_optimizer.state_dict()["velocity"],
                             optimizer.state_dict()["velocity"])
    assert fresh_optimizer.steps == optimizer.steps == 2
    assert checkpoint.state == STATE
    assert (checkpoint.epoch, checkpoint.step) == (1, 17)
    with numpy.load(path) as archive:
        assert json.loads(archive["meta"].item())["format_version"] == FORMAT_VERSION


def test_checkpoint_holds_only_plain_arrays(tmp_path):
    net, optimizer, _ = trained_pair(steps=0)
    save_checkpoint(tmp_path / "c.npz", net, optimizer, state=STATE)
    with numpy.load(tmp_path / "c.npz", allow_pickle=False) as archive:
        names = set(archive.files)
        assert all(archive[name].dtype != object for name in names)
    assert {"meta", "optimizer/velocity", "weights/layers.0.weight"} <= names


def test_failed_write_leaves_old_file_whole_and_no_temporary(tmp_path, monkeypatch):
    net, optimizer, _ = trained_pair(steps=0)
    path = tmp_path / "last.npz"
    save_checkpoint(path, net, optimizer, state=STATE)
    before = path.read_bytes()

    def crash_half_way(file, **arrays):
        file.write(b"PK\x03\x04 partial zip")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(numpy, "savez", crash_half_way)
    with pytest.raises(OSError, match="No space"):
        save_checkpoint(path, net, optimizer, state=STATE)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.npz"]


def test_atomic_write_replaces_whole_file(tmp_path):
    path = tmp_path / "f.txt"
    atomic_write(path, lambda f: f.write("old\n"), binary=False)
    with pytest.raises(RuntimeError):
        atomic_write(path, lambda f: (f.write("new, but cut sh"), (_ for _ in ()).throw(
            RuntimeError("crash"))), binary=False)
    assert path.read_text() == "old\n"
    atomic_write(path, lambda f: f.write("new\n"), binary=False)
    assert path.read_text() == "new\n"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_stale_temporaries_are_removed(tmp_path):
    (tmp_path / f".last.npz.abc{TEMP_SUFFIX}").write_bytes(b"half")
    (tmp_path / "last.npz").write_bytes(b"keep")
    remove_stale_temporaries(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["last.npz"]


def test_checkpoint_of_another_architecture_is_refused_naming_first_mismatch(tmp_path):
    net, optimizer, _ = trained_pair(steps=0)
    save_checkpoint(tmp_path / "lenet.npz", net, optimizer, state=STATE)
    checkpoint = load_checkpoint(tmp_path / "lenet.npz")

    resnet = nets.build(model_config("resnet"))
    with pytest.raises(CheckpointError, match=r"another architecture.*first mismatch.*"
                                              r"'layers\.4\.conv_layers\.0\.weight'"):
        restore(checkpoint, resnet)

    wider = model_config()
    wider["layers"][7] = {"LinearLayer": {"in_features": 784, "out_features": 100}}
    wider["layers"][9] = {"LinearLayer": {"in_features": 100, "out_features": 84}}
    with pytest.raises(CheckpointError, match=r"'layers\.7\.weight' has shape \(784, 120\) in it "
                                              r"but \(784, 100\) in the network"):
        check_matches(nets.build(wider), checkpoint.weights)

    with pytest.raises(CheckpointError, match=r"'layers\.0\.weight' has dtype float32 in it but "
                                              r"float64"):
        check_matches(nets.build(model_config(), dtype="float64"), checkpoint.weights)

    smaller = copy.deepcopy(model_config())
    del smaller["layers"][9:11]
    smaller["layers"][7] = {"LinearLayer": {"in_features": 784, "out_features": 84}}
    with pytest.raises(CheckpointError, match=r"'layers\.7\.weight' has shape"):
        check_matches(nets.build(smaller), checkpoint.weights)

    extra = dict(checkpoint.weights, **{"layers.99.weight": numpy.zeros(3, numpy.float32)})
    with pytest.raises(CheckpointError, match=r"'layers\.99\.weight', which the network lacks"):
        check_matches(net, extra)


def test_truncated_corrupt_and_foreign_files_are_refused(tmp_path):
    net, optimizer, _ = trained_pair(steps=0)
    good = tmp_path / "good.npz"
    save_checkpoint(good, net, optimizer, state=STATE)
    data = good.read_bytes()

    (tmp_path / "truncated.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "truncated.npz")

    (tmp_path / "garbage.npz").write_bytes(b"\x00 not a zip file at all" * 10)
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "garbage.npz")

    numpy.savez(tmp_path / "foreign.npz", w=numpy.zeros(3))
    with pytest.raises(CheckpointError, match="not an xpnn checkpoint"):
        load_checkpoint(tmp_path / "foreign.npz")

    numpy.savez(tmp_path / "future.npz", meta=numpy.array('{"format_version": 99}'))
    with pytest.raises(CheckpointError, match="format version 99"):
        load_checkpoint(tmp_path / "future.npz")

    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.npz")


def test_flipped_byte_inside_weights_is_caught(tmp_path):
    """A corrupted (not truncated) member fails the zip CRC check and is refused."""
    net, optimizer, _ = trained_pair(steps=0)
    path = tmp_path / "c.npz"
    save_checkpoint(path, net, optimizer, state=STATE)
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("weights/layers.7.weight.npy")
    data = bytearray(path.read_bytes())
    data[info.header_offset + 200] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(path)


# -- the metadata: user data, the run state's fields, checkpoints of earlier versions -----------

def test_user_metadata_round_trips_without_a_run(tmp_path):
    """save_checkpoint(path, net, opt, {...}) outside a training run loads back (it was refused
    for lacking config, epoch and step)."""
    net, optimizer, images = trained_pair()
    save_checkpoint(tmp_path / "mine.npz", net, optimizer, {"note": "mine", "scores": [1, 2.5]})
    checkpoint = load_checkpoint(tmp_path / "mine.npz")
    assert checkpoint.user == {"note": "mine", "scores": [1, 2.5]}
    assert checkpoint.state is None and (checkpoint.epoch, checkpoint.step) == (0, 0)
    fresh, fresh_optimizer, _ = trained_pair(seed=5, steps=0)
    restore(checkpoint, fresh, fresh_optimizer)
    assert numpy.array_equal(fresh.forward(images), net.forward(images))
    with pytest.raises(CheckpointError, match="not saved by a training run, so it holds no "
                                              "config; give the network's config with -c"):
        checkpoint.config
    with pytest.raises(CheckpointError, match="metadata is not JSON"):
        save_checkpoint(tmp_path / "bad.npz", net, optimizer, {"array": numpy.zeros(2)})


def rewrite_meta(path, **changes):
    """Rewrite the checkpoint at `path` with its metadata's fields changed (a dotted name reaches
    into a mapping: epoch_progress.seen); None removes a field."""
    with numpy.load(path) as archive:
        arrays = {name: archive[name] for name in archive.files}
    meta = json.loads(arrays["meta"].item())
    for name, value in changes.items():
        *outer, last = name.split(".")
        target = meta
        for key in outer:
            target = target[key]
        if value is None:
            target.pop(last, None)
        else:
            target[last] = value
    arrays["meta"] = numpy.array(json.dumps(meta))
    numpy.savez(path, **arrays)


BAD_FIELDS = [  # issue 21's edits: (field, value, what the message says it must be)
    ("epoch", "3", "a whole number from 0"),
    ("epoch", -1, "a whole number from 0"),
    ("step", -2, "a whole number from 0"),
    ("step", 10**30, "a whole number from 0"),
    ("step", 40, "at most steps_per_epoch"),
    ("workers", 0, "a whole number from 1"),
    ("metrics", "lots", "a list of 1 epoch record"),
    ("metrics", [{"epoch": "one"}], "a list of 1 epoch record"),
    ("epoch_progress", [1, 2], "a mapping of loss_sum"),
    ("epoch_progress.seen", "12", "a finite number >= 0, whole"),
    ("epoch_progress.loss_sum", None, None),  # absent: 0, as before the field existed
    ("epoch_progress.correct", 50, "at most epoch_progress.seen"),
    ("best_val_acc", 7, "null or in [0, 1]"),
    ("optimizer_scalars", "fast", "a mapping"),
    ("optimizer_scalars.lr", "0.1", "a finite number"),
    ("optimizer_scalars.steps", 2.5, "a whole number from 0"),
    ("config", [1], "a mapping"),
]


@pytest.mark.parametrize("name, value, expected", BAD_FIELDS)
def test_a_bad_metadata_field_is_one_line_naming_it(tmp_path, name, value, expected):
    net, optimizer, _ = trained_pair(steps=0)
    path = tmp_path / "last.npz"
    state = RunState({"model": {}}, epoch=1, step=3, steps_per_epoch=30, workers=2,
                     metrics=[{"epoch": 1, "test_acc": 0.5, "val_acc": None}])
    save_checkpoint(path, net, optimizer, state=state)
    rewrite_meta(path, **{name: value})
    if expected is None:
        assert load_checkpoint(path).state.epoch_progress.loss_sum == 0
        return
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(path)
    message = str(caught.value)
    assert "\n" not in message and f"has a bad {name}: " in message and expected in message


def test_a_checkpoint_written_by_the_previous_format_loads(tmp_path):
    """The metadata as xpnn 0.2.0 wrote it (no version or user fields) gives the same state."""
    net, optimizer, _ = trained_pair()
    old_meta = {"config": {"model": {}}, "epoch": 1, "step": 5, "steps_per_epoch": 30,
                "train_count": 3000, "limit_train": 3000, "limit_test": None,
                "checkpoint_every": 200, "workers": 2, "ranks": 1,
                "metrics": [{"epoch": 1, "train_loss": 0.5, "train_acc": 0.8, "val_loss": None,
                             "val_acc": None, "test_loss": 0.4, "test_acc": 0.9, "lr": 0.01,
                             "seconds": 1.5}],
                "best_val_acc": None,
                "epoch_progress": {"loss_sum": 12.5, "correct": 40, "seen": 100, "seconds": 0.3},
                "model_name": "MNISTNetwork", "num_parameters": 107786, "shuffle": "...",
                "device": "cpu", "saved_at": "2026-12-01T12:00:00+0000", "format_version": 1,
                "optimizer_scalars": {"lr": 0.05, "steps": 2}}
    arrays = {f"weights/{name}": value for name, value in net.state_dict().items()}
    arrays["optimizer/velocity"] = optimizer.state_dict()["velocity"]
    arrays["meta"] = numpy.array(json.dumps(old_meta))
    numpy.savez(tmp_path / "old.npz", **arrays)
    checkpoint = load_checkpoint(tmp_path / "old.npz")
    assert checkpoint.state.epoch_progress.correct == 40 and checkpoint.state.workers == 2
    assert checkpoint.optimizer["steps"] == 2 and checkpoint.user is None
    resaved = tmp_path / "new.npz"
    save_checkpoint(resaved, net, optimizer, state=checkpoint.state)
    assert load_checkpoint(resaved).state == checkpoint.state
