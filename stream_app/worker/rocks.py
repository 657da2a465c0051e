"""One memory budget for all of a worker's RocksDB databases, and what they hold now.

Faust opens one RocksDB per table partition (standbys included) and gives each its own block cache and its own
memtables. A worker's RocksDB memory then grows with the partitions it has held and the bytes written to each,
until every memtable is full: for a worker that owns, stands by for and takes over a few partitions of two tables,
that is tens of MB of growth for a few MB of rows. Here every database of the worker shares one block cache and
one write-buffer manager (RocksDB's own way to cap memtables across databases), so the worker's RocksDB memory is
bounded by two settings whatever it holds. Faust's store is touched here only: `use_budget` swaps its options.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import rocksdict
from faust.stores.rocksdb import RocksDBOptions

from stream_app.worker.delivery import table_databases

MB = 1 << 20


@dataclass
class RocksBudget:
    """The memory all of a worker's databases share."""

    memtable_bytes: int  # all memtables together; past ~90% the database being written flushes its own
    cache_bytes: int  # one LRU block cache for every database
    cache: rocksdict.Cache = field(init=False, repr=False)
    buffers: rocksdict.WriteBufferManager = field(init=False, repr=False)

    def __post_init__(self):
        self.cache = rocksdict.Cache(self.cache_bytes)
        self.buffers = rocksdict.WriteBufferManager(self.memtable_bytes, False)  # flush early, never stall writes


class BudgetedOptions(RocksDBOptions):
    """Faust's rocksdict options, with the budget's cache and write-buffer manager instead of per-database ones."""

    def __init__(self, budget: RocksBudget, **options):
        super().__init__(**options, use_rocksdict=True)
        self.budget = budget

    def as_options(self) -> rocksdict.Options:
        options = rocksdict.Options(raw_mode=True)
        options.create_if_missing(True)
        options.set_max_open_files(self.max_open_files)
        options.set_write_buffer_size(self.write_buffer_size)
        options.set_max_write_buffer_number(self.max_write_buffer_number)
        options.set_target_file_size_base(self.target_file_size_base)
        options.set_write_buffer_manager(self.budget.buffers)
        tables = rocksdict.BlockBasedOptions()
        tables.set_bloom_filter(self.bloom_filter_size, True)
        tables.set_block_cache(self.budget.cache)
        tables.set_index_type(rocksdict.BlockBasedIndexType.binary_search())
        options.set_block_based_table_factory(tables)
        return options


def use_budget(table, budget: RocksBudget) -> None:
    """Make every database the table opens from now on share `budget` (call before the worker starts)."""
    store = table.data
    store.rocksdb_options = BudgetedOptions(budget, **store.options)


class RocksMemory(NamedTuple):
    """Bytes a table's open databases hold, by RocksDB's own count."""

    databases: int
    memtables: int  # rocksdb.cur-size-all-mem-tables, summed
    table_readers: int  # index and filter blocks outside the cache (rocksdb.estimate-table-readers-mem)


def memory_of(table) -> RocksMemory:
    dbs = table_databases(table)
    return RocksMemory(len(dbs), sum(_int(db, "rocksdb.cur-size-all-mem-tables") for db in dbs),
                       sum(_int(db, "rocksdb.estimate-table-readers-mem") for db in dbs))


def open_databases(store_dir) -> int:
    """Databases this process holds open under `store_dir`, tracked by Faust or not: RocksDB keeps each one's
    LOCK file open while the database lives (Linux' /proc; 0 elsewhere)."""
    root = str(Path(store_dir).resolve()) + os.sep
    try:
        fds = list(Path("/proc/self/fd").iterdir())
    except OSError:
        return 0
    return sum(1 for fd in fds if (link := _link(fd)).startswith(root) and link.endswith("/LOCK"))


def _link(fd: Path) -> str:
    try:
        return os.readlink(fd)
    except OSError:  # closed since it was listed (the listing's own descriptor among them)
        return ""


def _int(db, name: str) -> int:
    try:
        return int(db.property_int_value(name) or 0)
    except Exception:  # a database closed under us (a revoked partition) counts as empty
        return 0
