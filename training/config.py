"""Training configs (sections model, train and data; the README lists their keys): read a YAML
file and check every section, key and value before any work starts. Every problem raises
`ConfigError` naming the file (or the flag), the key and the bad value."""
import copy
import inspect
import math
from pathlib import Path

import yaml

from xpnn import configs, nets
from xpnn.backend.dispatch import PRECISIONS
from xpnn.data import DEFAULT_VALIDATION
from xpnn.nets.config import ConfigError, check_keys, check_number, closest
from xpnn.optim import (DEFAULT_BETAS, DEFAULT_EPS, DEFAULT_MOMENTUM, OPTIMIZER_OPTIONS,
                        OPTIMIZERS, SCHEDULES, Schedule)
from xpnn.training.augment import OPTIONS as AUGMENT_OPTIONS
from xpnn.training.overrides import Override, apply_overrides, blame

SECTIONS = ("model", "train", "data")
ARRAYS = "arrays"  # images given in Python (`training.fit`), not read from files
DATASETS = ("mnist", "fashion-mnist", "idx", ARRAYS)  # idx: any folder of the four IDX files
TRAIN_KEYS = ("epochs", "batch_size", "optimizer", "lr", "momentum", "betas", "eps",
              "weight_decay", "schedule", "seed", "label_smoothing", "precision",
              "early_stopping")
TRAIN_REQUIRED = ("epochs", "batch_size", "optimizer", "lr")
DATA_KEYS = ("dataset", "data_dir", "validation", "augment")
UPPER_LIMITS = {  # the bounded floats: (within bounds?, message after the key for a value not)
    "train.momentum": (lambda value: value < 1, "must be in [0, 1), got {!r}"),
    "train.label_smoothing": (lambda value: value < 1, "must be in [0, 1), got {!r}; 0.1 is usual"),
    "train.early_stopping.min_delta": (lambda value: value < 1, "is a fraction of accuracy in "
                                       "[0, 1) (0.001 = 0.1 percentage point), got {!r}"),
    "data.augment.rotate": (lambda value: value <= 180,
                            "is the largest angle in degrees, in [0, 180]; got {!r}"),
    "data.augment.scale": (lambda value: value < 1, "draws zooms in [1 - scale, 1 + scale], so "
                           "it must be in [0, 1); got {!r}"),
    "data.augment.shear": (lambda value: value < 90,
                           "is the largest shear angle in degrees, in [0, 90); got {!r}"),
}


def find_config(spec):
    """The config file `spec` names: a path to a YAML file, or the name of a shipped config
    (``resnet``, ``resnet.yaml`` or ``configs/resnet.yaml`` where no such file exists here);
    `ConfigError` listing the shipped names when it is neither."""
    path = Path(spec)
    if path.is_file():
        return path
    shipped = configs.shipped()
    name = path.name.removesuffix(".yaml").removesuffix(".yml")
    if str(path.parent) in (".", "configs") and name in shipped:
        return shipped[name]  # a folder of that name here (`-o resnet`'s run) is no config
    if path.exists():
        raise ConfigError(f"config {spec} is a folder; give a YAML file or the name of a shipped "
                          f"config")
    if path.name == name and str(path.parent) == ".":  # a bare name
        raise ConfigError(f"{name!r} is neither a config file nor the name of a config shipped "
                          f"with xpnn{closest(name, shipped)}; shipped: {', '.join(shipped)}")
    raise ConfigError(f"config file {path} does not exist{closest(name, shipped)}; or give the "
                      f"name of a config shipped with xpnn: {', '.join(shipped)}")


def read_config(path):
    """The raw, unchecked mapping in the YAML file at `path` (read within `parse_yaml`'s bounds
    and `MAX_CONFIG_BYTES`); `ConfigError` if it cannot be read."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except OSError as error:
        raise ConfigError(f"cannot read config file {path}: {error.strerror or error}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"config file {path} is larger than {MAX_CONFIG_BYTES // 1024} KiB; a "
                          f"config is a few KiB of YAML: is it the right file?")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(f"cannot read config file {path}: it is not UTF-8 text (byte "
                          f"{error.start} is 0x{data[error.start]:02x})") from None
    return parse_yaml(text, str(path))


# Far beyond any real config, far below what would exhaust memory or Python's stack.
MAX_CONFIG_BYTES = 1024 * 1024
MAX_CONFIG_DEPTH = 50          # levels of nesting (the shipped configs use 5)
MAX_CONFIG_VALUES = 100_000    # values, with every alias counted as a copy of what it names


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing documents nested deeper than `MAX_CONFIG_DEPTH`."""

    depth = 0

    def compose_node(self, parent, index):
        self.depth += 1
        try:
            if self.depth > MAX_CONFIG_DEPTH:
                line = self.peek_event().start_mark.line + 1
                raise _Refused(f"is nested more than {MAX_CONFIG_DEPTH} levels deep (line "
                               f"{line}); a config needs a few")
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


class _Refused(Exception):
    """What a config's YAML holds beyond the limits; the message follows its source's name."""


def parse_yaml(text, source="<string>"):
    """The value of the YAML document `text` (safe types only); `ConfigError` starting with
    `source`, quoting no value, for invalid YAML or YAML past the `MAX_CONFIG_*` bounds once
    aliases are expanded (an alias inside what it names included)."""
    loader = None
    try:
        loader = _BoundedLoader(text)  # refuses characters YAML does not allow, at once
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expanded_size(node)
        return loader.construct_document(node)
    except _Refused as refused:
        raise ConfigError(f"{source} {refused}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{source} is not valid YAML: {' '.join(str(error).split())}") from None
    finally:
        if loader is not None:
            loader.dispose()


def _check_expanded_size(root):
    """Raise `_Refused` if the node graph under `root`, aliases expanded, holds more than
    `MAX_CONFIG_VALUES` nodes, is nested deeper than `MAX_CONFIG_DEPTH`, or holds a cycle."""
    sizes, depths, on_path = {}, {}, set()
    stack = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            on_path.discard(key)
            children = _children(node)
            sizes[key] = 1 + sum(sizes[id(child)] for child in children)
            depths[key] = 1 + max((depths[id(child)] for child in children), default=0)
            if sizes[key] > MAX_CONFIG_VALUES:
                raise _Refused(f"holds more than {MAX_CONFIG_VALUES:,} values once its aliases "
                               f"(*name) are expanded; a config needs a few hundred")
            if depths[key] > MAX_CONFIG_DEPTH:
                raise _Refused(f"is nested more than {MAX_CONFIG_DEPTH} levels deep once its "
                               f"aliases (*name) are expanded; a config needs a few")
            continue
        if key in sizes:
            continue
        if key in on_path:
            line = node.start_mark.line + 1
            raise _Refused(f"holds an alias inside what it names (the anchor at line {line}): "
                           f"a value that contains itself")
        on_path.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node) if id(child) not in sizes)


def _children(node):
    if isinstance(node, yaml.MappingNode):
        return [item for pair in node.value for item in pair]
    return node.value if isinstance(node, yaml.SequenceNode) else []


def load_config(path, overrides=()):
    """The checked config at `path` (`find_config`) with `overrides` (`Override`s, or {dotted
    key: value}; None values ignored) set; `ConfigError` naming the file or the flags at fault."""
    if isinstance(overrides, dict):
        overrides = [Override(key, value) for key, value in overrides.items()]
    overrides = [override for override in overrides if override.value is not None]
    path = find_config(path)
    raw = read_config(path)
    config = apply_overrides(raw, overrides)  # a key it cannot reach: an error naming the flag
    try:
        return validate_config(config)
    except ConfigError as error:
        raise blame(error, overrides, str(path), lambda: error_of(raw)) from None


def error_of(config):
    """The `ConfigError` that `validate_config` raises for `config`, or None."""
    try:
        validate_config(config)
    except ConfigError as error:
        return error
    return None


def validate_config(config):
    """Check a whole config mapping; a new dict with the README's defaults filled in."""
    if not isinstance(config, dict):
        kind = "empty" if config is None else f"a {type(config).__name__}"
        raise ConfigError(f"a config must be a mapping with sections {', '.join(SECTIONS)}; "
                          f"this one is {kind}")
    check_keys("config", config, SECTIONS, required=("model", "train"))
    train = validate_train(config["train"])
    data = validate_data(config.get("data") or {})
    if "early_stopping" in train and data["validation"] == 0:
        raise ConfigError("train.early_stopping watches the validation accuracy, but "
                          "data.validation is 0 (nothing held out); hold out some training "
                          "images (data.validation: 5000) or remove train.early_stopping")
    model = copy.deepcopy(config["model"])
    nets.check(model)  # raises ConfigError naming the layer at fault; draws no weight
    model.setdefault("num_classes", nets.DEFAULT_NUM_CLASSES)
    return {"model": model, "train": train, "data": data}


def validate_train(train):
    """Check the train section; return it with defaults filled in."""
    check_keys("train", train, TRAIN_KEYS, required=TRAIN_REQUIRED)
    checked = {key: check_number(f"train.{key}", train[key], int, low=1)
               for key in ("epochs", "batch_size")}
    name = checked["optimizer"] = _choice("train.optimizer", train["optimizer"], tuple(OPTIMIZERS))
    checked["lr"] = _finite("train.lr", train["lr"], low_open=True)
    adam = name in ("adam", "adamw")
    for key in ("momentum",) if adam else ("betas", "eps"):
        if key in train:
            takes = [other for other, options in OPTIMIZER_OPTIONS.items() if key in options]
            raise ConfigError(f"train.{key} is an option of {' and '.join(takes)}, not of "
                              f"{name}, which takes {', '.join(OPTIMIZER_OPTIONS[name])}; remove "
                              f"it from the train section")
    if adam:
        checked["betas"] = _betas(train.get("betas", list(DEFAULT_BETAS)))
        checked["eps"] = _finite("train.eps", train.get("eps", DEFAULT_EPS), low_open=True)
    else:
        default = DEFAULT_MOMENTUM if name == "momentum_sgd" else 0.0
        checked["momentum"] = _finite("train.momentum", train.get("momentum", default))
    default = 0.01 if name == "adamw" else 0.0
    checked["weight_decay"] = _finite("train.weight_decay", train.get("weight_decay", default))
    checked["schedule"] = validate_schedule(train.get("schedule", {"name": "constant"}),
                                            checked["lr"], checked["epochs"])
    checked["seed"] = check_number("train.seed", train.get("seed", 0), int, low=0)
    checked["label_smoothing"] = _finite("train.label_smoothing", train.get("label_smoothing", 0.0))
    checked["precision"] = _choice("train.precision", train.get("precision", "fp32"), PRECISIONS)
    stopping = train.get("early_stopping")
    if stopping is not None:
        if not isinstance(stopping, dict) or "patience" not in stopping:
            raise ConfigError(f"train.early_stopping must be a mapping like {{patience: 3, "
                              f"min_delta: 0.001}} (min_delta optional, a fraction of accuracy), "
                              f"got {stopping!r}")
        check_keys("train.early_stopping", stopping, ("patience", "min_delta"))
        where = "train.early_stopping."
        min_delta = _finite(where + "min_delta", stopping.get("min_delta", 0.0))
        checked["early_stopping"] = {
            "patience": check_number(where + "patience", stopping["patience"], int, low=1),
            "min_delta": min_delta}
    return checked


def _betas(betas):
    bad = ConfigError(f"train.betas must be a list of two numbers in [0, 1), like [0.9, 0.999], "
                      f"got {betas!r}")
    if not isinstance(betas, (list, tuple)) or len(betas) != 2:
        raise bad
    checked = [_finite(f"train.betas.{index}", beta) for index, beta in enumerate(betas)]
    if max(checked) >= 1:
        raise bad
    return checked


def validate_schedule(schedule, lr, epochs):
    """Check ``{name: constant|step|cosine, <options>}`` by building an `optim.Schedule` from it."""
    if isinstance(schedule, str):
        schedule = {"name": schedule}
    if not isinstance(schedule, dict) or "name" not in schedule:
        raise ConfigError(f"train.schedule must be a mapping like {{name: cosine, warmup_epochs: "
                          f"0.2}} with name one of {', '.join(SCHEDULES)}, got {schedule!r}")
    name = _choice("train.schedule.name", schedule["name"], tuple(SCHEDULES))
    option_names = [p for p in inspect.signature(SCHEDULES[name]).parameters
                    if p not in ("base_lr", "epoch", "total_epochs")]
    if "warmup_epochs" in option_names:
        option_names.append("warmup_steps")  # optimizer steps (`optim.Schedule`)
    options = {key: value for key, value in schedule.items() if key != "name"}
    check_keys(f"train.schedule ({name})", options, option_names)
    for key, value in options.items():
        where = f"train.schedule.{key}"
        options[key] = (check_number(where, value, int, low=0) if key == "warmup_steps" else
                        _finite(where, value, low_open=key in ("step_size", "gamma")))
    try:
        rule = Schedule(name, lr, epochs, steps_per_epoch=1, **options)
        rates = [rule(epochs * fraction) for fraction in (0.0, 0.25, 0.5, 0.75, 1.0)]
    except (TypeError, ValueError, ArithmeticError) as error:
        raise ConfigError(f"train.schedule {schedule!r}: {error}") from None
    if not all(math.isfinite(rate) and rate >= 0 for rate in rates):
        raise ConfigError(f"train.schedule {schedule!r} gives learning rates {rates} over the run; "
                          f"they must be finite and >= 0")
    return {"name": name, **options}


def validate_data(data):
    """Check the data section (data.augment keeps only the options given); return it with
    defaults filled in."""
    check_keys("data", data, DATA_KEYS)
    dataset = _choice("data.dataset", data.get("dataset", "mnist"), DATASETS)
    data_dir = data.get("data_dir")
    if data_dir is not None and not isinstance(data_dir, str):
        raise ConfigError(f"data.data_dir must be a folder path (a string), got {data_dir!r}")
    validation = check_number("data.validation", data.get("validation", DEFAULT_VALIDATION), int,
                              low=0)
    augment = data.get("augment") or {}
    if not isinstance(augment, dict):
        raise ConfigError(f"data.augment must be a mapping like {{translate: 2, rotate: 10}} of "
                          f"options {', '.join(AUGMENT_OPTIONS)}, got {augment!r}")
    check_keys("data.augment", augment, AUGMENT_OPTIONS)
    checked = {}
    for key in [key for key in AUGMENT_OPTIONS if key in augment]:
        where, value = f"data.augment.{key}", augment[key]
        if key == "translate":
            value = check_number(where, value, int, low=0)
        elif key != "flip":
            value = _finite(where, value)
        elif not isinstance(value, bool):
            raise ConfigError(f"data.augment.flip must be true or false, got {value!r}")
        elif value and dataset == "mnist":  # a mirrored digit is not that digit
            raise ConfigError(f"data.augment.flip mirrors images, which turns digits into "
                              f"non-digits; it is refused for {dataset!r} (use it for "
                              f"fashion-mnist or an idx dataset of symmetric classes)")
        checked[key] = value
    return {"dataset": dataset, "data_dir": data_dir, "validation": validation,
            "augment": checked}


def _choice(where, value, options):
    if value not in options:
        raise ConfigError(f"{where} must be one of {', '.join(map(repr, options))}, "
                          f"got {value!r}{closest(value, options)}")
    return value


def _finite(where, value, low_open=False):
    """A finite float >= 0 (> 0 with `low_open`, and within `UPPER_LIMITS`) from a number or a
    numeric string such as '1e-3', which YAML 1.1 leaves a string."""
    given = value
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ConfigError(f"{where} must be a number, got {value!r}") from None
    value = check_number(where, value, float, low=0, low_open=low_open)
    if not math.isfinite(value):
        raise ConfigError(f"{where} must be finite, got {value!r}")
    fits, message = UPPER_LIMITS.get(where, (None, ""))
    if fits and not fits(value):
        raise ConfigError(f"{where} {message.format(given)}")
    return value
