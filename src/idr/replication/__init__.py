"""Primary → mirror log shipping, catch-up, promotion with fencing (docs/replication.md)."""

from idr.replication.manager import Replicator
from idr.replication.state import MIRROR, PRIMARY, ReplState

__all__ = ["MIRROR", "PRIMARY", "ReplState", "Replicator", "replication_metrics"]


def replication_metrics(replicator: Replicator) -> dict[str, float]:
    """Gauges for ``/metrics`` (name → value); see ``Replicator.replication_metrics``."""
    return replicator.replication_metrics()
