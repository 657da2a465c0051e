"""The worker's periodic hand-back of freed heap memory (stream_app/worker/memory.py)."""

import platform
import sys

import pytest

from stream_app.worker import memory


@pytest.mark.skipif(sys.platform != "linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_freed_memory_is_handed_back_on_glibc():
    assert memory.trim() is True

