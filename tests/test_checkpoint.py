"""Checkpoints: exact round trips, atomic writes, and refusal of files that do not fit."""
import copy
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


META = {"config": {"model": "anything JSON"}, "epoch": 3, "step": 17,
        "metrics": [{"epoch": 1, "test_acc": 0.5}]}


def test_round_trip_restores_identical_outputs_and_optimizer_state(tmp_path):
    net, optimizer, images = trained_pair()
    path = tmp_path / "last.npz"
    save_checkpoint(path, net, optimizer, META)

    fresh, fresh_optimizer, _ = trained_pair(seed=5, steps=0)
    checkpoint = load_checkpoint(path)
    restore(checkpoint, fresh, fresh_optimizer)

    assert numpy.array_equal(fresh.forward(images), net.forward(images))
    for (name, a), (_, b) in zip(net.state_dict().items(), fresh.state_dict().items()):
        assert a.dtype == b.dtype and numpy.array_equal(a, b), name
    assert numpy.array_equal(fresh_optimizer.state_dict()["velocity"],
                             optimizer.state_dict()["velocity"])
    assert fresh_optimizer.steps == optimizer.steps == 2
    assert (checkpoint.epoch, checkpoint.step, checkpoint.metrics) == (3, 17, META["metrics"])
    assert checkpoint.meta["format_version"] == FORMAT_VERSION


def test_checkpoint_holds_only_plain_arrays(tmp_path):
    net, optimizer, _ = trained_pair(steps=0)
    save_checkpoint(tmp_path / "c.npz", net, optimizer, META)
    with numpy.load(tmp_path / "c.npz", allow_pickle=False) as archive:
        names = set(archive.files)
        assert all(archive[name].dtype != object for name in names)
    assert {"meta", "optimizer/velocity", "weights/layers.0.weight"} <= names


def test_failed_write_leaves_old_file_whole_and_no_temporary(tmp_path, monkeypatch):
    net, optimizer, _ = trained_pair(steps=0)
    path = tmp_path / "last.npz"
    save_checkpoint(path, net, optimizer, META)
    before = path.read_bytes()

    def crash_half_way(file, **arrays):
        file.write(b"PK\x03\x04 partial zip")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(numpy, "savez", crash_half_way)
    with pytest.raises(OSError, match="No space"):
        save_checkpoint(path, net, optimizer, {**META, "epoch": 4})
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
    save_checkpoint(tmp_path / "lenet.npz", net, optimizer, META)
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
    save_checkpoint(good, net, optimizer, META)
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
    save_checkpoint(path, net, optimizer, META)
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("weights/layers.7.weight.npy")
    data = bytearray(path.read_bytes())
    data[info.header_offset + 200] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(path)
