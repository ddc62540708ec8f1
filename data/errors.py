"""The one error type of the data package."""


class DataError(ValueError):
    """A dataset file is missing, corrupt or malformed; the message names the file, what was wrong and what
    would be right."""
