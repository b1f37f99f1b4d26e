"""The web console every node serves at ``/console``: dashboard, resolve, register, prefixes, supply chain."""

from idr.console.app import Console, NodeView, add_console_routes

__all__ = ["Console", "NodeView", "add_console_routes"]
