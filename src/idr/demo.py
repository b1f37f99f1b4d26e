"""Example identifiers for ``idr demo``: a slice of a Chongqing–Sichuan supply chain."""

from __future__ import annotations

from idr.core.request import Op, Request
from idr.core.service import NodeService
from idr.model.value import HandleValue, ValueReference

ADMIN = ValueReference("0.NA/88.100", 300)

EXAMPLES: list[tuple[str, list[tuple[int, str, str]]]] = [
    (
        "88.100/VIN-LDC9Z2024CQ000001",
        [
            (1, "URL", "https://example.org/vehicles/LDC9Z2024CQ000001"),
            (2, "DESC", "Electric SUV assembled in Chongqing, 2024"),
            (3, "BATTERY_PACK", "88.100/PACK-2024-000001"),
        ],
    ),
    (
        "88.100/PACK-2024-000001",
        [
            (1, "URL", "https://example.org/packs/2024-000001"),
            (2, "DESC", "Battery pack, 96 cells, 75 kWh"),
            (3, "CELL", "88.100/BAT-2024-000001"),
        ],
    ),
    (
        "88.100/BAT-2024-000001",
        [
            (1, "URL", "https://example.org/cells/BAT-2024-000001"),
            (2, "DESC", "LFP cell made in Yibin, Sichuan; batch 2024-07"),
            (3, "EMAIL", "quality@example.org"),
        ],
    ),
]


def load_examples(service: NodeService) -> list[str]:
    """Create the examples (again, if they exist) and return their handles."""
    for handle, values in EXAMPLES:
        vals = tuple(HandleValue(i, t, d.encode("utf-8")) for i, t, d in values)
        r = service.handle(Request(Op.CREATE_HANDLE, handle, values=vals, identity=ADMIN, overwrite=True))
        if not r.ok:
            raise RuntimeError(f"demo data: {handle}: {r.message}")
    return [h for h, _ in EXAMPLES]
