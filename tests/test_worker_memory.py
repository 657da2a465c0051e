"""The worker's periodic hand-back of freed heap memory (stream_app/worker/memory.py)."""

import platform
import sys

import pytest

from stream_app.worker import memory


@pytest.mark.skipif(sys.platform != "linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_freed_memory_is_handed_back_on_glibc():
    assert memory.trim() is True



@pytest.mark.skipif(sys.platform != "linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_the_number_of_heaps_can_be_limited_on_glibc():
    assert memory.limit_arenas(0) is False  # 0 keeps glibc's default: nothing is set
    assert memory.limit_arenas(8) is True  # glibc's own default on a 1-core machine: harmless to this test process
