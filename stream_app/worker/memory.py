"""Hand freed heap memory back to the operating system (glibc's `malloc_trim`).

A worker's resident memory otherwise keeps the high-water mark of everything it ever held at once: each takeover's
changelog recovery, a burst's batches, a model swap's two models. glibc keeps freed memory in its heaps for reuse,
so RSS (what a container's memory limit counts) only grows. Elsewhere (macOS, musl) this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.cache
def _malloc_trim():
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # not glibc
        return None


def trim() -> bool:
    """Release the free memory at the top and in the middle of every heap; False where malloc_trim is missing."""
    fn = _malloc_trim()
    if fn is None:
        return False
    fn(0)
    return True
