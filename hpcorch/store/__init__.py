"""The run store: record files in run directories (the truth) and a SQLite index of them."""

from __future__ import annotations

from hpcorch.store.index import StoreIndex, default_home
from hpcorch.store.records import RunRecord, read_record, write_record

__all__ = ["RunRecord", "StoreIndex", "default_home", "read_record", "write_record"]
