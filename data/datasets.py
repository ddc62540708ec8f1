"""Known IDX image-classification datasets (MNIST, Fashion-MNIST), read and checked by
`load_dataset`. A dataset folder holds the four IDX files of `FILE_STEMS`, each raw or
gzip-compressed; checksums are of the decompressed bytes."""
import gzip
import hashlib
import os
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xpnn.messages import closest
from xpnn.data.idx import DataError, parse_idx, read_idx_bytes

# Attribute of `Dataset` -> file name stem; listed in the order they are read.
FILE_STEMS = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
              "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}
NUM_CLASSES = 10
DIGIT_NAMES = tuple(str(digit) for digit in range(NUM_CLASSES))
DEFAULT_VALIDATION = 5000


@dataclass(frozen=True)
class DatasetSpec:
    """What is known about a named dataset: where it lives, its checksums and how to repair it."""
    name: str
    default_dir: Path
    sha256: dict          # file stem -> sha256 hex digest of the decompressed bytes
    class_names: tuple
    missing_hint: str     # how to get the files when the default folder lacks them
    corrupt_hint: str     # how to repair a file that fails its checks
    mirrors: tuple = ()   # base URLs that `download` tries in order


DATASETS = {
    "mnist": DatasetSpec(
        name="mnist",
        default_dir=Path(__file__).resolve().parent / "mnist",
        sha256={
            "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        },
        class_names=DIGIT_NAMES,
        missing_hint="restore it from git (git checkout -- data/mnist), fetch it with "
                     "data.download('mnist', DIR) and pass --data-dir DIR, or pass --data-dir",
        corrupt_hint="the file is corrupt; restore it from git (git checkout -- data/mnist) or re-download it "
                     "(data.download('mnist', DIR))",
        mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/",
                 "https://storage.googleapis.com/cvdf-datasets/mnist/"),
    ),
    "fashion-mnist": DatasetSpec(
        name="fashion-mnist",
        default_dir=Path("/usr/share/datasets/fashion-mnist"),
        # Computed from Debian's dataset-fashion-mnist 0.0~git20200523.55506a9-1.
        sha256={
            "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        },
        class_names=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                     "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        missing_hint="apt-get install dataset-fashion-mnist or pass --data-dir",
        corrupt_hint="the file is corrupt; reinstall it (apt-get install --reinstall dataset-fashion-mnist) "
                     "or re-download it (data.download('fashion-mnist', DIR))",
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    ),
}


@dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """An image-classification dataset in memory. All arrays are read-only.

    train_images: (N, 1, H, W) uint8   train_labels: (N,) int64 in [0, num_classes)
    test_images:  (M, 1, H, W) uint8   test_labels:  (M,) int64 in [0, num_classes)
    """
    name: str
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    num_classes: int
    class_names: tuple

    @property
    def image_shape(self):
        """(channels, height, width) of one image, e.g. (1, 28, 28)."""
        return tuple(self.train_images.shape[1:])

    def __repr__(self):
        return (f"Dataset({self.name!r}, train={len(self.train_labels)}, test={len(self.test_labels)}, "
                f"image_shape={self.image_shape}, num_classes={self.num_classes})")


@dataclass(frozen=True, eq=False)
class Split:
    """Training images and labels with a validation set held out (views of a `Dataset`'s arrays;
    the validation arrays are empty when nothing is held out): images (N, 1, H, W), labels (N,)."""
    train_images: np.ndarray
    train_labels: np.ndarray
    validation_images: np.ndarray
    validation_labels: np.ndarray


def hold_out(dataset, count):
    """A `Split` of `dataset`'s training set: all but the last `count` images, and the last
    `count`. `DataError` unless 0 <= count < the number of training images."""
    total = len(dataset.train_labels)
    if not 0 <= count < total:
        raise DataError(f"data.validation {count:,} leaves no training images: {dataset.name!r} "
                        f"has {total:,}; hold out between 0 and {total - 1:,} of them")
    keep = total - count
    return Split(dataset.train_images[:keep], dataset.train_labels[:keep],
                 dataset.train_images[keep:], dataset.train_labels[keep:])


def dataset_spec(name):
    """The `DatasetSpec` of a known dataset name (case and '_' vs '-' ignored); else `DataError`."""
    if not isinstance(name, str):
        raise DataError(f"dataset name must be a string, got {type(name).__name__} {name!r}; "
                        f"known: {', '.join(sorted(DATASETS))}")
    key = name.strip().lower().replace("_", "-")
    if key not in DATASETS:
        raise DataError(f"unknown dataset {name!r}{closest(key, DATASETS)}; known: "
                        f"{', '.join(sorted(DATASETS))}; or pass name=None with data_dir= for another folder "
                        f"of the four IDX files")
    return DATASETS[key]


def load_dataset(name="mnist", data_dir=None, verify=True):
    """Read, check and return a dataset as a `Dataset`; `DataError` naming the file at fault.

    name: 'mnist' or 'fashion-mnist', or None for the unnamed folder `data_dir` of the four IDX
    files (no checksums; labels in [0, 10)). data_dir: default the dataset's `default_dir`.
    verify: check each file's sha256 (structure, counts and labels are always checked).
    """
    spec = None if name is None else dataset_spec(name)
    if spec is None and data_dir is None:
        raise DataError(f"load_dataset needs a dataset name ({', '.join(sorted(DATASETS))}) or, with "
                        f"name=None, data_dir= a folder of the four IDX files")
    folder = Path(data_dir) if data_dir is not None else spec.default_dir
    label = spec.name if spec is not None else (folder.name or str(folder))
    if spec is not None and data_dir is None:
        missing_hint, repair_hint = spec.missing_hint, spec.corrupt_hint
    else:
        missing_hint = (f"a dataset folder holds the four IDX files "
                        f"{', '.join(f'{stem}[.gz]' for stem in FILE_STEMS.values())}; put them there or "
                        f"pass another data_dir")
        repair_hint = ("the file is malformed; rewrite or re-download it" if spec is None else
                       f"{spec.corrupt_hint}; if this folder holds another dataset in the same format, "
                       f"load it with name=None (no checksums) or verify=False")
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise DataError(f"{label}: data folder {folder} {what}; {missing_hint}")
    paths = {key: next((path for path in (folder / stem, folder / f"{stem}.gz") if path.is_file()),
                       None) for key, stem in FILE_STEMS.items()}  # uncompressed preferred
    missing = [f"{FILE_STEMS[key]}[.gz]" for key, path in paths.items() if path is None]
    if missing:
        raise DataError(f"{label}: {folder} lacks {', '.join(missing)}; {missing_hint}")

    checksums = spec.sha256 if (spec is not None and verify) else {}
    arrays = {key: _read_checked(path, checksums.get(FILE_STEMS[key]), label, repair_hint)
              for key, path in paths.items()}

    splits = {}
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        _check_split(images, labels, paths[f"{split}_images"], paths[f"{split}_labels"])
        splits[f"{split}_images"] = images[:, None]
        splits[f"{split}_labels"] = labels = labels.astype(np.int64)
        labels.flags.writeable = False
    if splits["train_images"].shape[1:] != splits["test_images"].shape[1:]:
        raise DataError(f"{label}: training images are {arrays['train_images'].shape[1:]} "
                        f"({paths['train_images']}) but test images are {arrays['test_images'].shape[1:]} "
                        f"({paths['test_images']}); both splits must have one image size")
    class_names = spec.class_names if spec is not None else DIGIT_NAMES
    return Dataset(name=label, num_classes=NUM_CLASSES, class_names=class_names, **splits)


def sha256_of_idx(path):
    """The sha256 hex digest of the decompressed bytes of the IDX file at `path`."""
    return hashlib.sha256(read_idx_bytes(path)).hexdigest()


READ_CACHE_FILES = 8  # the four files of two datasets
_READ = {}  # (resolved path, size, mtime_ns, expected sha256) -> checked read-only array


def _read_checked(path, expected_sha256, label, repair_hint):
    """The uint8 array of one IDX file, its structure and (if `expected_sha256`) checksum checked;
    a file read before and unchanged since (size, modification time) is not read again."""
    try:
        stat = Path(path).stat()
        key = (str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns, expected_sha256)
    except OSError:
        key = None  # read_idx_bytes says what is wrong
    if key in _READ:
        return _READ[key]
    try:
        data = read_idx_bytes(path)
        array = parse_idx(data, str(path))
    except DataError as error:
        raise DataError(f"{error} [{label}: {repair_hint}]") from None
    if expected_sha256 is not None:
        got = hashlib.sha256(data).hexdigest()
        if got != expected_sha256:
            raise DataError(f"{path}: checksum mismatch for {label}: sha256 of the decompressed bytes is "
                            f"{got}, expected {expected_sha256}; {repair_hint}")
    if key is not None:
        if len(_READ) >= READ_CACHE_FILES:
            _READ.pop(next(iter(_READ)))
        _READ[key] = array
    return array


def _check_split(images, labels, images_path, labels_path):
    """Raise `DataError` unless images are (N, H, W), labels are (N,) and every label is in range."""
    if images.ndim != 3:
        raise DataError(f"{images_path}: images must be 3-D (count, rows, columns), i.e. 2-D per image; "
                        f"the header says shape {images.shape}")
    if labels.ndim != 1:
        raise DataError(f"{labels_path}: labels must be 1-D (count,); the header says shape {labels.shape}")
    if len(images) == 0 or 0 in images.shape[1:]:
        raise DataError(f"{images_path}: holds no images (shape {images.shape}); expected at least one "
                        f"non-empty image")
    if len(images) != len(labels):
        raise DataError(f"{labels_path}: {len(labels)} labels but {images_path} holds {len(images)} images; "
                        f"each image needs exactly one label")
    bad = np.flatnonzero(labels >= NUM_CLASSES)
    if bad.size:
        first = int(bad[0])
        raise DataError(f"{labels_path}: label {int(labels[first])} at index {first} is outside "
                        f"[0, {NUM_CLASSES}) ({bad.size} such labels); labels must be class indices "
                        f"0..{NUM_CLASSES - 1}")


def download(name, dest_dir, mirrors=None, timeout=60.0):
    """Download the four `.gz` IDX files of dataset `name` into `dest_dir`; return that folder's
    Path. Each file is checked against its sha256, then written atomically; files already there
    that pass are kept. `mirrors` (base URLs, file:// too; default: the dataset's) are tried in
    order; `DataError` if every one fails."""
    spec = dataset_spec(name)
    mirrors = tuple(mirrors) if mirrors is not None else spec.mirrors
    if not mirrors:
        raise DataError(f"download({spec.name!r}): no mirror known; copy the files by hand into {dest_dir}")
    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    for stem in FILE_STEMS.values():
        target = dest / f"{stem}.gz"
        expected = spec.sha256[stem]
        if target.is_file() and _decompressed_sha256(target.read_bytes()) == expected:
            continue
        failures = []
        for mirror in mirrors:
            url = f"{mirror.rstrip('/')}/{stem}.gz"
            try:
                with urllib.request.urlopen(url, timeout=timeout) as response:
                    payload = response.read()
            except (OSError, ValueError) as error:
                failures.append(f"{url}: {error}")
                continue
            got = _decompressed_sha256(payload)
            if got == expected:
                partial = target.with_name(target.name + ".part")
                partial.write_bytes(payload)
                os.replace(partial, target)
                break
            failures.append(f"{url}: sha256 of the decompressed bytes is {got or 'n/a (not gzip)'}, "
                            f"expected {expected}")
        else:
            raise DataError(f"download({spec.name!r}): could not fetch {stem}.gz from any mirror:\n  "
                            + "\n  ".join(failures)
                            + f"\nfetch it by hand into {dest}, or pass mirrors=[...]")
    return dest


def _decompressed_sha256(payload):
    """sha256 hex digest of the gunzipped `payload`, or '' if it is not a valid gzip stream."""
    try:
        return hashlib.sha256(gzip.decompress(payload)).hexdigest()
    except (OSError, EOFError, zlib.error):
        return ""
