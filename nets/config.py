"""Checking configuration mappings, with errors that say what was wrong and what would be right."""
from xpnn.messages import closest


class ConfigError(ValueError):
    """A configuration value or key is wrong; the message says which and what would be right."""


def check_keys(where, mapping, allowed, required=()):
    """Raise `ConfigError` for a key of `mapping` not in `allowed` or a missing required key."""
    if not isinstance(mapping, dict):
        raise ConfigError(f"{where} must be a mapping, got {type(mapping).__name__} {mapping!r}")
    for key in mapping:
        if key not in allowed:
            raise ConfigError(f"{where}: unknown key {key!r}{closest(key, allowed)}; "
                              f"valid keys: {', '.join(sorted(allowed))}")
    for key in required:
        if key not in mapping:
            raise ConfigError(f"{where}: missing required key {key!r}")


def check_number(where, value, kind=float, low=None, low_open=False):
    """Return `value` as `kind` after checking its type and range; else raise `ConfigError`."""
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not numeric or (kind is int and not float(value).is_integer()):
        raise ConfigError(f"{where} must be {'an integer' if kind is int else 'a number'}, "
                          f"got {value!r}")
    value = kind(value)
    if low is not None and (value <= low if low_open else value < low):
        raise ConfigError(f"{where} must be {'>' if low_open else '>='} {low}, got {value!r}")
    return value
