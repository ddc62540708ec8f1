"""Tests of the data package: the IDX reader, the dataset loader's checks and errors, and `download`.

Most error cases use small synthetic IDX files in tmp_path; the real MNIST files are loaded once per module.
"""
import dataclasses
import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest

from xpnn.data import (DATASETS, FILE_STEMS, DataError, Dataset, download, encode_idx, load_dataset, parse_idx,
                  read_idx, sha256_of_idx)

MNIST_DIR = Path(__file__).resolve().parent.parent / "data" / "mnist"
FASHION_DIR = DATASETS["fashion-mnist"].default_dir
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture(scope="module")
def mnist():
    return load_dataset("mnist")


def write_idx(path, array, compress=None):
    """Write `array` (uint8) as an IDX file; gzip it if the name ends with .gz (or `compress`)."""
    data = encode_idx(np.asarray(array, dtype=np.uint8))
    if compress if compress is not None else str(path).endswith(".gz"):
        data = gzip.compress(data, mtime=0)
    Path(path).write_bytes(data)
    return Path(path)


def write_small_dataset(folder, train=12, test=5, size=(4, 3), gz=True, train_labels=None):
    """A synthetic dataset folder of the four IDX files; returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    suffix = ".gz" if gz else ""
    write_idx(folder / f"{FILE_STEMS['train_images']}{suffix}", rng.integers(0, 256, (train, *size)))
    labels = np.arange(train) % 10 if train_labels is None else train_labels
    write_idx(folder / f"{FILE_STEMS['train_labels']}{suffix}", labels)
    write_idx(folder / f"{FILE_STEMS['test_images']}{suffix}", rng.integers(0, 256, (test, *size)))
    write_idx(folder / f"{FILE_STEMS['test_labels']}{suffix}", np.arange(test) % 10)
    return folder


# ---------------------------------------------------------------- real datasets

def test_mnist_loads_with_shapes_dtypes_and_counts(mnist):
    assert isinstance(mnist, Dataset)
    assert mnist.name == "mnist"
    assert mnist.train_images.shape == (60000, 1, 28, 28) and mnist.train_images.dtype == np.uint8
    assert mnist.test_images.shape == (10000, 1, 28, 28) and mnist.test_images.dtype == np.uint8
    assert mnist.train_labels.shape == (60000,) and mnist.train_labels.dtype == np.int64
    assert mnist.test_labels.shape == (10000,) and mnist.test_labels.dtype == np.int64
    assert mnist.num_classes == 10 and mnist.class_names == tuple("0123456789")
    assert mnist.image_shape == (1, 28, 28)
    assert "60000" in repr(mnist) and "(1, 28, 28)" in repr(mnist)


def test_mnist_label_histogram_and_pixels_are_the_canonical_ones(mnist):
    assert np.bincount(mnist.train_labels, minlength=10).tolist() == MNIST_TRAIN_COUNTS
    assert np.bincount(mnist.test_labels, minlength=10).tolist() == MNIST_TEST_COUNTS
    assert mnist.train_labels[:8].tolist() == [5, 0, 4, 1, 9, 2, 1, 3]
    assert mnist.train_images.min() == 0 and mnist.train_images.max() == 255
    # Digits are bright strokes on a black background: the border is dark, the centre is not.
    assert mnist.train_images[:, 0, 0, :].mean() < 1
    assert mnist.train_images[:, 0, 10:18, 10:18].mean() > 60


def test_mnist_checksums_match_the_table_of_the_known_dataset():
    for stem, expected in DATASETS["mnist"].sha256.items():
        assert sha256_of_idx(MNIST_DIR / f"{stem}.gz") == expected
    readme = (MNIST_DIR / "README.md").read_text()
    assert all(digest in readme for digest in DATASETS["mnist"].sha256.values())


def test_dataset_arrays_are_read_only_and_the_dataclass_frozen(mnist):
    with pytest.raises(ValueError):
        mnist.train_images[0, 0, 0, 0] = 1
    with pytest.raises(ValueError):
        mnist.test_labels[0] = 1
    with pytest.raises(AttributeError):
        mnist.name = "other"


def test_a_file_read_before_is_not_read_again_unless_it_changed(tmp_path, monkeypatch):
    folder = tmp_path / "mnist"
    shutil.copytree(MNIST_DIR, folder)
    first = load_dataset("mnist", data_dir=folder)
    reads = []
    monkeypatch.setattr("xpnn.data.datasets.read_idx_bytes",
                        lambda path: reads.append(path) or pytest.fail("read again"))
    second = load_dataset("mnist", data_dir=folder)
    assert second.train_images.base is first.train_images.base and not reads
    monkeypatch.undo()
    labels = folder / "t10k-labels-idx1-ubyte.gz"
    labels.write_bytes(gzip.compress(gzip.decompress(labels.read_bytes())[:-1] + b"\x0b"))
    with pytest.raises(DataError, match="checksum mismatch"):  # a changed file is read afresh
        load_dataset("mnist", data_dir=folder)


def test_default_mnist_folder_does_not_depend_on_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    dataset = load_dataset("mnist", verify=False)
    assert len(dataset.test_labels) == 10000


@pytest.mark.skipif(not FASHION_DIR.is_dir(),
                    reason=f"Fashion-MNIST not installed at {FASHION_DIR} (apt-get install dataset-fashion-mnist)")
def test_fashion_mnist_loads_with_checksums():
    dataset = load_dataset("fashion_mnist")
    assert dataset.name == "fashion-mnist"
    assert dataset.train_images.shape == (60000, 1, 28, 28)
    assert dataset.test_images.shape == (10000, 1, 28, 28)
    assert np.bincount(dataset.train_labels).tolist() == [6000] * 10
    assert np.bincount(dataset.test_labels).tolist() == [1000] * 10
    assert dataset.class_names[0] == "T-shirt/top" and dataset.class_names[9] == "Ankle boot"


def test_missing_fashion_mnist_says_how_to_install_it(monkeypatch, tmp_path):
    absent = dataclasses.replace(DATASETS["fashion-mnist"], default_dir=tmp_path / "nowhere")
    monkeypatch.setitem(DATASETS, "fashion-mnist", absent)
    with pytest.raises(DataError, match="does not exist.*apt-get install dataset-fashion-mnist or pass --data-dir"):
        load_dataset("fashion-mnist")


# ---------------------------------------------------------------- the IDX reader

def test_read_idx_round_trips_raw_and_gzip(tmp_path):
    array = np.arange(2 * 3 * 5, dtype=np.uint8).reshape(2, 3, 5)
    for name in ("a-idx3-ubyte", "a-idx3-ubyte.gz"):
        result = read_idx(write_idx(tmp_path / name, array))
        assert result.dtype == np.uint8 and result.shape == (2, 3, 5)
        np.testing.assert_array_equal(result, array)
    # A gzip stream is recognised by its bytes, whatever the name.
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / "b", array, compress=True)), array)


def test_truncated_file_is_refused_with_the_byte_count(tmp_path):
    path = tmp_path / "t-idx3-ubyte"
    path.write_bytes(encode_idx(np.zeros((3, 4, 4), np.uint8))[:-5])
    with pytest.raises(DataError, match=r"t-idx3-ubyte: truncated.*\(3, 4, 4\) needs 48 payload bytes.*has 43"):
        read_idx(path)


def test_over_long_file_is_refused(tmp_path):
    path = tmp_path / "long-idx1-ubyte"
    path.write_bytes(encode_idx(np.zeros(6, np.uint8)) + b"\x00\x00")
    with pytest.raises(DataError, match=r"long-idx1-ubyte: too long.*needs 6 payload bytes.*has 8 \(2 extra\)"):
        read_idx(path)


def test_truncated_header_is_refused(tmp_path):
    path = tmp_path / "h"
    path.write_bytes(bytes([0, 0, 8, 3, 0, 0, 0, 2]))
    with pytest.raises(DataError, match="truncated header: 3 dimensions need 16 header bytes, the file has 8"):
        read_idx(path)
    path.write_bytes(b"\x00\x00")
    with pytest.raises(DataError, match="too short for an IDX header"):
        read_idx(path)


def test_wrong_magic_number_is_refused(tmp_path):
    path = tmp_path / "magic-idx1-ubyte"
    path.write_bytes(b"\x01\x00\x08\x01" + b"\x00\x00\x00\x01" + b"\x07")
    with pytest.raises(DataError, match=r"magic-idx1-ubyte: wrong magic number 01 00 08 01.*starts with 00 00"):
        read_idx(path)


def test_unsupported_element_type_is_refused_by_name(tmp_path):
    path = tmp_path / "floats"
    path.write_bytes(b"\x00\x00\x0d\x01" + b"\x00\x00\x00\x01" + b"\x00" * 4)
    with pytest.raises(DataError, match=r"type code 0x0D \(float32\) is not supported; only 0x08"):
        read_idx(path)


def test_corrupt_gzip_stream_is_refused(tmp_path):
    good = gzip.compress(encode_idx(np.arange(200, dtype=np.uint8)), mtime=0)
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0xFF
    for name, data in [("flipped.gz", bytes(flipped)), ("cut.gz", good[:-10])]:
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(DataError, match=f"{name}: corrupt gzip stream"):
            read_idx(path)


def test_gz_name_without_gzip_bytes_is_refused(tmp_path):
    path = write_idx(tmp_path / "plain.gz", np.zeros(3), compress=False)
    with pytest.raises(DataError, match=r"plain.gz: named .gz but is not a gzip stream \(starts with 00 00 08 01"):
        read_idx(path)


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(DataError, match="absent-idx1-ubyte: no such file"):
        read_idx(tmp_path / "absent-idx1-ubyte")


def test_parse_idx_is_a_view_of_the_buffer():
    array = parse_idx(encode_idx(np.arange(6, dtype=np.uint8).reshape(2, 3)))
    assert array.shape == (2, 3) and not array.flags.writeable


# ---------------------------------------------------------------- the loader's checks

def test_unnamed_folder_loads_raw_or_gzip(tmp_path):
    for gz in (True, False):
        folder = write_small_dataset(tmp_path / f"set{gz}", size=(4, 3), gz=gz)
        dataset = load_dataset(None, data_dir=folder)
        assert dataset.name == folder.name
        assert dataset.train_images.shape == (12, 1, 4, 3) and dataset.test_images.shape == (5, 1, 4, 3)
        assert dataset.train_labels.tolist() == [i % 10 for i in range(12)]
        assert dataset.class_names == tuple("0123456789")


def test_labels_out_of_range_name_the_first_bad_index_and_value(tmp_path):
    labels = np.array([0, 1, 2, 11, 4, 200, 6, 7, 8, 9, 0, 1])
    folder = write_small_dataset(tmp_path / "bad", train_labels=labels)
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte.gz: label 11 at index 3 is outside \[0, 10\) "
                                        r"\(2 such labels\)"):
        load_dataset(None, data_dir=folder)


def test_label_count_must_match_image_count(tmp_path):
    folder = write_small_dataset(tmp_path / "counts", train=12, train_labels=np.zeros(11))
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.gz: 11 labels but .*train-images-idx3-ubyte.gz "
                                        "holds 12 images"):
        load_dataset(None, data_dir=folder)


def test_images_must_be_2d_per_image(tmp_path):
    folder = write_small_dataset(tmp_path / "dims")
    write_idx(folder / f"{FILE_STEMS['test_images']}.gz", np.zeros((5, 4, 3, 2)))
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte.gz: images must be 3-D.*shape \(5, 4, 3, 2\)"):
        load_dataset(None, data_dir=folder)


def test_train_and_test_image_sizes_must_agree(tmp_path):
    folder = write_small_dataset(tmp_path / "sizes")
    write_idx(folder / f"{FILE_STEMS['test_images']}.gz", np.zeros((5, 3, 3)))
    with pytest.raises(DataError, match=r"training images are \(4, 3\).*test images are \(3, 3\)"):
        load_dataset(None, data_dir=folder)


def test_wrong_size_file_in_a_dataset_is_refused(tmp_path):
    folder = write_small_dataset(tmp_path / "size")
    path = folder / f"{FILE_STEMS['train_images']}.gz"
    data = encode_idx(np.zeros((12, 4, 3), np.uint8)) + b"\x00" * 7
    path.write_bytes(gzip.compress(data))
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.gz: too long.*7 extra"):
        load_dataset(None, data_dir=folder)


def test_missing_file_names_every_missing_file_and_the_folder(tmp_path):
    folder = write_small_dataset(tmp_path / "partial")
    (folder / f"{FILE_STEMS['train_labels']}.gz").unlink()
    (folder / f"{FILE_STEMS['test_images']}.gz").unlink()
    with pytest.raises(DataError, match=r"partial lacks train-labels-idx1-ubyte\[.gz\], "
                                        r"t10k-images-idx3-ubyte\[.gz\]; a dataset folder holds the four IDX files"):
        load_dataset(None, data_dir=folder)


def test_missing_folder_is_refused(tmp_path):
    with pytest.raises(DataError, match="data folder .*nothing-here does not exist"):
        load_dataset("mnist", data_dir=tmp_path / "nothing-here")


def test_checksum_mismatch_reports_expected_and_got(tmp_path):
    folder = tmp_path / "mnist-copy"
    folder.mkdir()
    for stem in FILE_STEMS.values():
        if stem != FILE_STEMS["test_labels"]:
            shutil.copy(MNIST_DIR / f"{stem}.gz", folder)
    labels = bytearray(gzip.decompress((MNIST_DIR / f"{FILE_STEMS['test_labels']}.gz").read_bytes()))
    header = 8
    labels[header + 100] = (labels[header + 100] + 1) % 10     # still a valid label: only the checksum can tell
    (folder / FILE_STEMS["test_labels"]).write_bytes(bytes(labels))
    expected = DATASETS["mnist"].sha256[FILE_STEMS["test_labels"]]
    with pytest.raises(DataError) as caught:
        load_dataset("mnist", data_dir=folder)
    message = str(caught.value)
    assert "t10k-labels-idx1-ubyte: checksum mismatch for mnist" in message
    assert f"expected {expected}" in message and "is " in message.split("expected")[0]
    assert "the file is corrupt; restore it from git (git checkout -- data/mnist) or re-download" in message
    assert "name=None" in message
    # Without verification the (structurally valid) copy loads.
    assert load_dataset("mnist", data_dir=folder, verify=False).test_labels[100] == labels[header + 100]


def test_structural_error_in_a_known_dataset_says_how_to_repair_it(tmp_path):
    folder = write_small_dataset(tmp_path / "broken")
    (folder / f"{FILE_STEMS['train_images']}.gz").write_bytes(b"\x1f\x8bnot really gzip")
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.gz: corrupt gzip stream.*\[mnist: the file is "
                                        r"corrupt; restore it from git"):
        load_dataset("mnist", data_dir=folder)


def test_unknown_dataset_name_suggests_the_closest(tmp_path):
    with pytest.raises(DataError, match=r"unknown dataset 'mnsit' \(did you mean 'mnist'\?\); known: "
                                        r"fashion-mnist, mnist"):
        load_dataset("mnsit")
    with pytest.raises(DataError, match=r"did you mean 'fashion-mnist'"):
        load_dataset("fashionmnist")
    with pytest.raises(DataError, match="needs a dataset name"):
        load_dataset(None)


def test_error_type_is_a_value_error():
    assert issubclass(DataError, ValueError)


# ---------------------------------------------------------------- download (offline, file:// mirrors)

def test_download_verifies_and_falls_back_to_the_next_mirror(tmp_path):
    bad_mirror = tmp_path / "bad-mirror"
    bad_mirror.mkdir()
    for stem in FILE_STEMS.values():
        (bad_mirror / f"{stem}.gz").write_bytes(gzip.compress(b"not mnist"))
    dest = download("mnist", tmp_path / "dest", mirrors=[bad_mirror.as_uri(), MNIST_DIR.as_uri()])
    assert sorted(p.name for p in dest.iterdir()) == sorted(f"{stem}.gz" for stem in FILE_STEMS.values())
    assert len(load_dataset("mnist", data_dir=dest).train_labels) == 60000


def test_download_fails_clearly_when_no_mirror_has_the_files(tmp_path):
    with pytest.raises(DataError, match=r"could not fetch train-images-idx3-ubyte.gz from any mirror"):
        download("mnist", tmp_path / "dest", mirrors=[(tmp_path / "empty").as_uri()])


# ---------------------------------------------------------------- the validation split

def test_hold_out_keeps_the_last_images_for_validation(tmp_path):
    from xpnn.data import hold_out
    dataset = load_dataset(None, data_dir=write_small_dataset(tmp_path / "small"))
    split = hold_out(dataset, 5)
    assert np.array_equal(split.train_images, dataset.train_images[:7])
    assert np.array_equal(split.validation_images, dataset.train_images[7:])
    assert np.array_equal(split.validation_labels, dataset.train_labels[7:])
    assert np.array_equal(hold_out(dataset, 5).validation_images, split.validation_images)
    nothing = hold_out(dataset, 0)
    assert len(nothing.train_labels) == 12 and len(nothing.validation_labels) == 0


@pytest.mark.parametrize("count", [12, 13, -1])
def test_hold_out_refuses_a_count_that_leaves_no_training_images(tmp_path, count):
    from xpnn.data import hold_out
    dataset = load_dataset(None, data_dir=write_small_dataset(tmp_path / "small"))
    with pytest.raises(DataError, match=r"data.validation .* leaves no training images: .* has "
                                        r"12; hold out between 0 and 11"):
        hold_out(dataset, count)
