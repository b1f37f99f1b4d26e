"""Bulk registration from JSON lines: ``{"handle": "88.100/x", "values": [REST JSON values]}``.

Runs with direct access to the node's data directory (an operator's tool, like Handle.Net's
batch loader), so it skips authentication but applies every validation the API applies. Each
batch is a job of the node's write path (``NodeService.import_records``); a node serving the
same store picks the batches up by following the store's log (``idr.runtime.follow``).
Good lines land in batched transactions (one log entry per batch); bad lines are reported
with their line numbers and skipped; an existing handle is replaced by the imported one.

Resumable (``import_file``): each batch is stored together with a checkpoint (the file's
last committed line, keyed by its name, size and mtime) in the same transaction, so after
an interruption (kill -9, lost database) a re-run skips exactly the lines already committed
and none twice. Rejected lines go to ``FILE.errors.jsonl`` (``{"line": n, "reason": …}``),
kept in step with the checkpoint so a resumed run lists each bad line once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import orjson

from idr.codec.rest import values_from_json
from idr.core.service import NodeService
from idr.core.validate import check_record_size, check_values
from idr.model.errors import HandleError
from idr.model.handle import Handle
from idr.model.value import HandleRecord

MAX_LINE = 4 * 1024 * 1024


@dataclass
class ImportReport:
    loaded: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)
    resumed_after: int = 0  # lines skipped because a previous run committed them
    elsewhere: int = 0  # a multi-server site: lines for handles another server holds (skipped)
    errors_path: Path | None = None


class HeldElsewhere(Exception):
    """The line's handle belongs to another server of this multi-server site: the same file
    imported on every server loads each handle where the site's hash puts it."""


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
    if service.site_owner(h.key) is not None:
        raise HeldElsewhere(name)
    if not service.is_responsible(h):
        raise ValueError(f"prefix of {name} is not homed on this node")
    values = check_values(values_from_json(doc.get("values"), name))
    check_record_size(name, values, service.max_record_bytes)
    errors = service.templates.check(values)
    if errors is not None:
        raise ValueError("; ".join(f"{e.field}: {e.reason}" for e in errors.errors) + f" ({errors.template})")
    return HandleRecord(name, values)


async def import_lines(
    service: NodeService,
    lines: Iterable[bytes],
    *,
    batch: int = 1000,
    on_progress: Callable[[int], None] | None = None,
    checkpoint: str | None = None,
    resume_after: int = 0,
    errors_out: IO[bytes] | None = None,
) -> ImportReport:
    """Import ``lines``; with ``checkpoint``, each batch records its last line number under
    that name atomically with the batch, and lines up to ``resume_after`` are skipped."""
    report = ImportReport(resumed_after=resume_after)
    pending: list[HandleRecord] = []
    done_bytes = 0
    committed = resume_after
    line_no = 0

    async def flush(upto: int) -> None:
        nonlocal committed
        mark = None if checkpoint is None else (checkpoint, upto)
        if errors_out is not None:
            # Before the commit: once the checkpoint says these lines landed, their rejections
            # are on disk too (a kill in between would otherwise lose them from the report;
            # rejections past the checkpoint are dropped on resume and found again).
            errors_out.flush()
        report.loaded += await service.import_records(pending, checkpoint=mark)
        committed = upto
        pending.clear()

    for line_no, line in enumerate(lines, 1):
        done_bytes += len(line)
        if line_no <= resume_after or not line.strip():
            continue
        try:
            pending.append(parse_line(service, line))
        except HeldElsewhere:
            report.elsewhere += 1
        except (HandleError, ValueError) as e:
            msg = e.message if isinstance(e, HandleError) else str(e)
            report.errors.append((line_no, msg))
            if errors_out is not None:
                errors_out.write(orjson.dumps({"line": line_no, "reason": msg}) + b"\n")
        if len(pending) >= batch:
            await flush(line_no)
            if on_progress:
                on_progress(done_bytes)
    if pending or (checkpoint is not None and line_no > committed):
        await flush(line_no)
    if on_progress:
        on_progress(done_bytes)
    return report


def checkpoint_name(path: Path) -> str:
    """Identifies one version of a file: a changed file starts from line 1 again."""
    st = path.stat()
    return f"{path.name}|{st.st_size}|{st.st_mtime_ns}"


def errors_path_for(path: Path) -> Path:
    return path.with_name(path.name + ".errors.jsonl")


async def import_file(
    service: NodeService,
    path: Path,
    *,
    batch: int = 1000,
    restart: bool = False,
    on_progress: Callable[[int], None] | None = None,
) -> ImportReport:
    """Resumable import of a JSON-lines file (see the module docstring).

    ``restart`` ignores a previous run's checkpoint and starts again from line 1.
    """
    name = checkpoint_name(path)
    resume_after = 0 if restart else service.store.checkpoint(name)
    errors_path = errors_path_for(path)
    # Keep only the rejections of lines already committed; the rest are found again.
    kept: list[bytes] = []
    if resume_after and errors_path.exists():
        for raw in errors_path.read_bytes().splitlines():
            try:
                if int(orjson.loads(raw)["line"]) <= resume_after:
                    kept.append(raw + b"\n")
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                continue
    with errors_path.open("wb") as errors_out, path.open("rb") as fh:
        errors_out.writelines(kept)
        report = await import_lines(
            service,
            fh,
            batch=batch,
            on_progress=on_progress,
            checkpoint=name,
            resume_after=resume_after,
            errors_out=errors_out,
        )
    report.errors_path = errors_path
    if not kept and not report.errors:
        errors_path.unlink()
    return report
