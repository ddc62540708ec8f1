"""Command-line changes to a config (``--set train.momentum=0.95``, ``--epochs 3``): a key is a
dotted path into the YAML file, list items numbered from 0, a layer's arguments reached through
its number alone (``model.layers.9.out_features=200``) or spelled out
(``model.layers.9.LinearLayer.out_features``); a value is read as YAML."""
import copy
import re
from dataclasses import dataclass

from xpnn.nets.config import ConfigError


@dataclass(frozen=True)
class Override:
    """Set `key` (a dotted path) to `value`; `flag` is how the user wrote it, for messages."""
    key: str
    value: object
    flag: str = ""

    def __post_init__(self):
        if not self.flag:
            object.__setattr__(self, "flag", f"--set {self.key}={self.value}")

    def named_in(self, message):
        """True when a validator's `message` is about the key this override sets (as in
        ``model.layers[9] LinearLayer: ...``, ``train.momentum must be ...`` or ``train: unknown
        key 'momentun'``)."""
        spelled, leaf = _spelled(self.key.split("."))
        return _mentions(message, spelled) or ("." in spelled and f"'{leaf}'" in message
                                                and _mentions(message, spelled.rsplit(".", 1)[0]))


def parse_override(text):
    """`Override` of a ``KEY=VALUE`` string (the value read as YAML); `ConfigError` otherwise."""
    key, equals, value_text = text.partition("=")
    key = key.strip()
    if not equals or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE with a dotted key, e.g. "
                          f"--set train.lr=0.1 or --set model.layers.9.out_features=100")
    from xpnn.training.config import parse_yaml  # bounded, as config files are read
    value = parse_yaml(value_text, f"--set {text}: the value") if value_text.strip() else ""
    return Override(key, value, f"--set {text}")


def apply_overrides(config, overrides):
    """A deep copy of the raw config mapping `config` with every override set, in order; keys
    that do not exist are added. `ConfigError` naming the flag when a key cannot be reached (a
    list number out of range, a key below a plain value)."""
    if not isinstance(config, dict):
        return config  # not a config at all: the validator says so, blaming the file
    config = copy.deepcopy(config)
    for override in overrides:
        node, parts = config, override.key.split(".")
        for depth, part in enumerate(parts[:-1]):
            node = _step(node, part, parts[depth + 1], override, ".".join(parts[:depth]))
        last = parts[-1]
        if isinstance(node, list):
            last = _index(node, last, override, ".".join(parts[:-1]))
        node[last] = override.value
    return config


def blame(error, overrides, file_label, file_error):
    """The `ConfigError` to report for `error`, raised by validating a config with `overrides`:
    naming the flags whose keys it is about; else the file if it is wrong on its own
    (``file_error()``: its own error, or None), else all the flags together."""
    culprits = [override for override in overrides if override.named_in(str(error))]
    if culprits:
        return ConfigError(f"{', '.join(o.flag for o in culprits)}: {error}")
    own_error = file_error() if overrides else error
    if own_error is None:
        return ConfigError(f"{file_label} with {', '.join(o.flag for o in overrides)}: {error}")
    return ConfigError(f"{file_label}: {own_error}")


# -- walking the config ---------------------------------------------------------------------------

def _step(node, part, next_part, override, where):
    """The child of `node` called `part`, created as an empty mapping if missing."""
    if isinstance(node, list):
        index = _index(node, part, override, where)
        item = node[index]
        name = _layer_name(item)
        if name is None or next_part == name:
            return item
        if not isinstance(item, dict):          # a bare "- ReLULayer": give it arguments
            item = node[index] = {name: {}}
        if item[name] is None:
            item[name] = {}
        return item[name]
    if isinstance(node, dict):
        if node.get(part) is None:
            node[part] = {}
        child = node[part]
        if not isinstance(child, (dict, list)):
            raise ConfigError(f"{override.flag}: {f'{where}.{part}' if where else part} is a "
                              f"value ({child!r}), not a section with keys")
        return child
    raise ConfigError(f"{override.flag}: {where} is a value ({node!r}), not a section with keys")


def _index(items, part, override, where):
    if not re.fullmatch(r"\d+", part):
        raise ConfigError(f"{override.flag}: {where} is a list; a number from 0 to "
                          f"{len(items) - 1} must follow it, not {part!r}")
    index = int(part)
    if index >= len(items):
        raise ConfigError(f"{override.flag}: {where} has {len(items)} entries, numbered 0 to "
                          f"{len(items) - 1}; there is no entry {index}")
    return index


def _layer_name(item):
    """The layer class name of a ``model.layers`` entry, or None for anything else."""
    if isinstance(item, str):
        return item
    if isinstance(item, dict) and len(item) == 1:
        (name, arguments), = item.items()
        if isinstance(name, str) and (arguments is None or isinstance(arguments, dict)):
            return name
    return None


def _spelled(parts):
    """(how the validator names the key, its last part): list items as ``[i]``, and anything
    inside a layer as the layer itself (``model.layers[9]``)."""
    spelled = parts[0]
    for depth, part in enumerate(parts[1:], start=1):
        if re.fullmatch(r"\d+", part):
            spelled += f"[{part}]"
            if parts[depth - 1] == "layers":
                return spelled, part
        else:
            spelled += f".{part}"
    return spelled, parts[-1]


def _mentions(message, spelled):
    return re.search(re.escape(spelled) + r"(?![\w\[])", message) is not None
