"""Storage engines behind one small interface (``Store``), with a transaction log."""

from idr.store.base import LogEntry, Store, StoreError, Write

__all__ = ["LogEntry", "Store", "StoreError", "Write"]
