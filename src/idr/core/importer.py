"""Bulk registration from JSON lines: ``{"handle": "88.100/x", "values": [REST JSON values]}``.

Runs with direct access to the node's data directory (an operator's tool, like Handle.Net's
batch loader), so it skips authentication but applies every validation the API applies.
Good lines land in batched transactions (one log entry per batch); bad lines are reported
with their line numbers and skipped; an existing handle is replaced by the imported one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import orjson

from idr.codec.rest import values_from_json
from idr.core.service import NodeService
from idr.core.validate import check_values
from idr.model.errors import HandleError
from idr.model.handle import Handle
from idr.model.value import HandleRecord

MAX_LINE = 4 * 1024 * 1024


@dataclass
class ImportReport:
    loaded: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)


def parse_line(service: NodeService, line: bytes) -> HandleRecord:
    """One line → the record to store; HandleError/ValueError with a reason otherwise."""
    if len(line) > MAX_LINE:
        raise ValueError(f"line longer than {MAX_LINE} bytes")
    try:
        doc = orjson.loads(line)
    except orjson.JSONDecodeError as e:
        raise ValueError(f"not JSON: {e}") from e
    if not isinstance(doc, dict):
        raise ValueError("each line must be a JSON object with 'handle' and 'values'")
    name = doc.get("handle")
    if not isinstance(name, str):
        raise ValueError("'handle' must be a string")
    h = Handle.parse(name)
    if not service.is_responsible(h):
        raise ValueError(f"prefix of {name} is not homed on this node")
    values = check_values(values_from_json(doc.get("values"), name))
    return HandleRecord(name, values)


def import_lines(
    service: NodeService,
    lines: Iterable[bytes],
    *,
    batch: int = 1000,
    on_progress: Callable[[int], None] | None = None,
) -> ImportReport:
    report = ImportReport()
    pending: list[HandleRecord] = []
    done_bytes = 0
    for line_no, line in enumerate(lines, 1):
        done_bytes += len(line)
        if not line.strip():
            continue
        try:
            pending.append(parse_line(service, line))
        except (HandleError, ValueError) as e:
            msg = e.message if isinstance(e, HandleError) else str(e)
            report.errors.append((line_no, msg))
        if len(pending) >= batch:
            report.loaded += service.import_records(pending)
            pending.clear()
            if on_progress:
                on_progress(done_bytes)
    if pending:
        report.loaded += service.import_records(pending)
    if on_progress:
        on_progress(done_bytes)
    return report
