"""Errors shown to users as one clear line (no traceback) by the CLI."""


class RecsysError(Exception):
    """Base class: the message says what is wrong and how to fix it."""


class DataNotFoundError(RecsysError):
    """A dataset is neither in the cache nor in the mirror."""


class ArtifactError(RecsysError):
    """A model artifact is missing, partial, corrupt, tampered with or of another format version."""


class EventError(RecsysError):
    """An input event failed validation; `reason` is the dead-letter reason code."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
