"""Helpers for error messages that say what would be right."""
import difflib


def closest(name, options):
    """' (did you mean X?)' for the option nearest to `name`, or '' if none is close."""
    match = difflib.get_close_matches(str(name), map(str, options), n=1, cutoff=0.5)
    return f" (did you mean {match[0]!r}?)" if match else ""
