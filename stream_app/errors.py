"""Errors shown to users as one clear line (no traceback) by the CLI.

`recsys` prints any RecsysError as `recsys: error: <message>` and exits 2 (stream_app/cli.py), so each
message says what is wrong and how to fix it, on one line."""


class RecsysError(Exception):
    """Base class: the message says what is wrong and how to fix it."""


class UsageError(RecsysError):
    """A flag's value, or a combination of flags, that the command cannot run with."""


class UnknownNameError(UsageError, ValueError):
    """An unknown dataset or split name (a ValueError too, for library callers)."""


class DataNotFoundError(RecsysError):
    """A dataset is neither in the cache nor in the mirror."""


class DataMismatchError(UsageError):
    """--data names another dataset than the one the model artifact was trained on."""


class ArtifactError(RecsysError):
    """A model artifact is missing, partial, corrupt, tampered with or of another format version."""


class ServiceError(RecsysError):
    """The worker cannot start: its web port is taken, the broker is unreachable, ..."""


class EventError(RecsysError):
    """An input event failed validation; `reason` is the dead-letter reason code."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
