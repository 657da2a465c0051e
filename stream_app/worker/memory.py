"""Keep a worker's resident memory near what it uses (glibc's `malloc_trim` and `mallopt`).

A worker's resident memory otherwise keeps the high-water mark of everything it ever held at once: each takeover's
changelog recovery, a burst's batches, a model swap's two models. glibc keeps freed memory in its heaps for reuse,
so RSS (what a container's memory limit counts) only grows; and it gives each thread that allocates (the consumer
thread, RocksDB's, torch's) its own heap, up to 8 per core, each keeping its own freed memory. Elsewhere (macOS,
musl) these do nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
from typing import NamedTuple

M_ARENA_MAX = -8  # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_THRESHOLD = -3


@functools.cache
def _libc():
    name = ctypes.util.find_library("c")
    try:
        lib = ctypes.CDLL(name) if name else None
        return lib if lib is not None and hasattr(lib, "malloc_trim") and hasattr(lib, "mallopt") else None
    except OSError:
        return None


class Heap(NamedTuple):
    """glibc's heap, all arenas: bytes handed out and not freed (mmapped chunks included), bytes freed but kept."""

    in_use: int
    free: int


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                       "fsmblks", "uordblks", "fordblks", "keepcost")]


def heap() -> Heap | None:
    """The heap now (glibc 2.33+'s mallinfo2); None elsewhere."""
    lib = _libc()
    if lib is None or not hasattr(lib, "mallinfo2"):
        return None
    lib.mallinfo2.restype = _Mallinfo2
    info = lib.mallinfo2()
    return Heap(info.uordblks + info.hblkhd, info.fordblks)


def trim() -> bool:
    """Release the free memory at the top and in the middle of every heap; False where malloc_trim is missing."""
    lib = _libc()
    if lib is None:
        return False
    lib.malloc_trim(0)
    return True


def limit_arenas(arenas: int) -> bool:
    """Let at most `arenas` heaps serve all threads created from now on (0: glibc's default); False where
    mallopt is missing or refuses."""
    return _mallopt(M_ARENA_MAX, arenas)


def fix_mmap_threshold(kib: int) -> bool:
    """Serve every allocation of `kib` KiB or more with its own mapping, returned to the system when freed (0:
    glibc's default). glibc's default threshold rises to the largest block freed so far (up to 32 MiB), after
    which a recovery's big buffers come from the heap and leave holes in it that RSS keeps. False where mallopt
    is missing or refuses."""
    return _mallopt(M_MMAP_THRESHOLD, kib << 10)


def _mallopt(parameter: int, value: int) -> bool:
    """glibc's mallopt; False for a value <= 0 (glibc's default kept), where mallopt is missing, or if it refuses."""
    lib = _libc()
    return lib is not None and value > 0 and bool(lib.mallopt(parameter, value))


def freeze_startup_objects() -> int:
    """Move every object alive now (modules, the model, Faust's services) out of the cycle collector's reach;
    returns how many. Faust runs a full `gc.collect()` per table on every rebalance, and walking the ~200 000
    objects of torch and the app took 0.15-0.2 s each time, in the middle of a takeover. What is frozen is only
    freed by reference counting (a swapped-out model still is: tests/test_worker_memory.py)."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
