"""Error types. Every message names the input (file, URI or field) and the problem."""


class SepclusterError(Exception):
    """Base class for errors that are the user's input, not a bug."""


class ConfigError(SepclusterError, ValueError):
    """A config or recipe field is invalid."""

    def __init__(self, field: str, problem: str, where: str | None = None):
        self.field = field
        self.problem = problem
        self.where = where  # the file the field is in, when there is one
        super().__init__(f"{where}: {field}: {problem}" if where else f"{field}: {problem}")

    def in_file(self, where: str) -> "ConfigError":
        """The same error, naming the file ``where`` the field was read from."""
        return ConfigError(self.field, self.problem, where=where)


class StorageError(SepclusterError, OSError):
    """A URI cannot be read or written (missing, no permission, bad credentials)."""


class AudioError(SepclusterError, ValueError):
    """An audio input cannot be decoded or has an unsupported layout."""


class DataError(SepclusterError, ValueError):
    """A dataset, library or catalog is empty, inconsistent or lacks what a job needs."""
