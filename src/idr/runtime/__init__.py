"""The asyncio side of a node: what runs the core's work without the core knowing threads.

``NodeRuntime`` (``writer``) owns the writer thread that group-commits every write, the
reader threads for store reads that may block, delivery of commit notifications on the
event loop, and the log follower (``follow``) that brings other writers' commits to this
process's caches. The node's assembly (``idr.node``) attaches one to each authoritative core.
"""

from idr.runtime.writer import NodeRuntime

__all__ = ["NodeRuntime"]
