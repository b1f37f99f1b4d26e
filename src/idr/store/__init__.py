"""Storage engines behind one small interface (``Store``), with a transaction log."""

from idr.store.base import LogEntry, Store, StoreError, Write
from idr.store.sqlite import SqliteStore

__all__ = ["LogEntry", "SqliteStore", "Store", "StoreError", "Write"]
