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


@pytest.mark.skipif(sys.platform != "linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_the_mmap_threshold_can_be_fixed_on_glibc():
    assert memory.fix_mmap_threshold(0) is False  # 0 keeps glibc's default
    assert memory.fix_mmap_threshold(128) is True  # glibc's own starting value: harmless to this test process


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


@pytest.mark.skipif(sys.platform != "linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_the_heap_is_measured_on_glibc():
    before = memory.heap()
    block = bytearray(8 << 20)  # above glibc's mmap threshold: counted as in use until freed
    during = memory.heap()
    del block
    assert before is not None and during is not None
    assert during.in_use - before.in_use >= 8 << 20
    assert before.free >= 0


def _write(dbs, megabytes: int) -> None:
    """Write `megabytes` of 1 KB values round-robin over `dbs`."""
    value = bytes(range(256)) * 4
    for n in range(megabytes * 1024):
        dbs[n % len(dbs)][b"k%d" % n] = value


def _flushed(db) -> bool:
    """Whether the database has written a memtable to disk, or is writing one."""
    return db.property_int_value("rocksdb.total-sst-files-size") + db.property_int_value(
        "rocksdb.num-immutable-mem-table") > 0


def test_a_workers_databases_share_one_memtable_budget(tmp_path):
    from types import SimpleNamespace

    from faust.stores.rocksdb import RocksDBOptions

    from stream_app.worker import rocks

    per_db = dict(write_buffer_size=4 << 20, max_write_buffer_number=2)
    alone = [RocksDBOptions(**per_db, use_rocksdict=True).open(tmp_path / f"alone-{i}") for i in range(3)]
    budget = rocks.RocksBudget(memtable_bytes=2 << 20, cache_bytes=1 << 20)
    shared = [rocks.BudgetedOptions(budget, **per_db).open(tmp_path / f"shared-{i}") for i in range(3)]
    _write(alone, 6), _write(shared, 6)
    assert not any(map(_flushed, alone))  # 2 MB each stays under a database's own 4 MiB write buffer
    assert any(map(_flushed, shared))  # together they passed the 2 MiB budget: RocksDB flushed
    table = SimpleNamespace(data=SimpleNamespace(_dbs=dict(enumerate(shared))))
    usage = rocks.memory_of(table)
    assert usage.databases == 3 and usage.memtables > 0 and usage.table_readers >= 0
    assert shared[0][b"k0"] == alone[0][b"k0"]  # flushed rows still read back


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="counts /proc/self/fd")
def test_open_databases_counts_what_the_process_holds_open_tracked_or_not(tmp_path):
    import gc

    from stream_app.worker import rocks

    budget = rocks.RocksBudget(memtable_bytes=2 << 20, cache_bytes=1 << 20)
    dbs = [rocks.BudgetedOptions(budget).open(tmp_path / f"db-{i}") for i in range(2)]
    other = rocks.BudgetedOptions(budget).open(tmp_path.parent / f"{tmp_path.name}-elsewhere")
    assert rocks.open_databases(tmp_path) == 2  # only those under the store folder
    dbs[0][b"k"] = b"v" * 1000
    assert budget.buffers.get_usage() > 0  # the budget counts every open database's memtables
    del dbs[0]
    gc.collect()
    assert rocks.open_databases(tmp_path) == 1  # a dropped database closes
    del other
