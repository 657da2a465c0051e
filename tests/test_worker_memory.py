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


def test_frozen_startup_objects_are_out_of_the_collectors_reach_and_a_dropped_model_is_still_freed(tmp_path):
    import gc
    import weakref

    from stream_harness import train_tiny

    from stream_app.core.artifacts import load_artifact

    train_tiny(tmp_path / "m")
    model = load_artifact(tmp_path / "m")
    try:
        assert memory.freeze_startup_objects() > 1000
        assert gc.get_freeze_count() > 1000
        ref = weakref.ref(model)
        del model  # as a model swap drops the old one: reference counting alone must free it
        assert ref() is None
    finally:
        gc.unfreeze()  # the rest of the test session collects as before
