"""Child process for the kill -9 test: commit forever, acknowledging each commit on stdout.

``python _crash_writer.py DB START``: for i = START, START+1, … commit ``88.100/crash-i``
together with ``88.999/LAST`` (= i) in one transaction, then print ``seq i``. A line on
stdout is a promise that the commit is durable.
"""

from __future__ import annotations

import hashlib
import sys

from idr.model.value import HandleRecord, HandleValue, ValueReference
from idr.store import SqliteStore, Write

MAX_COMMITS = 200_000  # the test kills us long before; this only bounds a runaway child


def record(i: int) -> HandleRecord:
    digest = hashlib.sha256(str(i).encode()).digest()
    return HandleRecord(
        f"88.100/crash-{i}",
        (
            HandleValue(1, "URL", f"https://example.cn/{i}".encode()),
            HandleValue(2, "DESC", digest * (1 + i % 40), references=(ValueReference("88.100/x", i),)),
        ),
    )


def last(i: int) -> HandleRecord:
    return HandleRecord("88.999/last", (HandleValue(1, "DESC", str(i).encode()),))


def main() -> None:
    path, start = sys.argv[1], int(sys.argv[2])
    store = SqliteStore(path)
    for i in range(start, start + MAX_COMMITS):
        seq = store.commit(
            "create", "crash", [Write(f"88.100/CRASH-{i}", record(i)), Write("88.999/LAST", last(i))]
        )
        sys.stdout.write(f"{seq} {i}\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
