"""Error types. Every message names the input (file, URI or field) and the problem."""


class SepclusterError(Exception):
    """Base class for errors that are the user's input, not a bug."""


class ConfigError(SepclusterError, ValueError):
    """A config or recipe field is invalid."""

    def __init__(self, field: str, problem: str):
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")


class StorageError(SepclusterError, OSError):
    """A URI cannot be read or written (missing, no permission, bad credentials)."""


class AudioError(SepclusterError, ValueError):
    """An audio input cannot be decoded or has an unsupported layout."""


class DataError(SepclusterError, ValueError):
    """A dataset, library or catalog is empty, inconsistent or lacks what a job needs."""
