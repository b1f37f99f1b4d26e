"""bench/federation_scale.py at its small size (--small): top + mirror, four secondary nodes in
two processes, two enterprise nodes, two recursive nodes; prefixes through the real lifecycle
API (apply → approve → file with the top), identifiers under them, a Zipf load."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "federation_scale.py"


def test_small_federation_scale_run_prints_every_figure() -> None:
    # The script stops every process it started, also on failure; the timeout bounds it.
    done = subprocess.run(
        [sys.executable, str(BENCH), "--small", "--json"], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = json.loads(done.stdout.strip().splitlines()[-1])
    assert [r["prefixes"] for r in rows] == [20, 40]
    for r in rows:
        # Every prefix went through apply → approve → file (the bench checks the top's register).
        assert r["new_prefixes"] == 20 and r["filing_rate"] > 0
        assert r["registered"] == 20 * 10 and r["registration_rate"] > 0
        for tag in ("r1", "r2"):
            assert r[f"{tag}_ok"] > 100 and r[f"{tag}_bad"] == 0  # every answer the values
            assert r[f"{tag}_lost"] <= r[f"{tag}_ok"] // 1000  # UDP: a datagram may be lost
            assert 0 < r[f"{tag}_hit_ratio"] < 1  # some walks, mostly cache hits
            assert r[f"{tag}_top_per_1000"] > 0  # walks reached the top
            assert 0 < r[f"{tag}_p50_ms"] <= r[f"{tag}_p99_ms"]
        assert r["top_mib"] > 0 and r["secondary_mib_per_node"] > 0 and r["recursive_mib"] > 0
    # The second size adds 20 prefixes the recursive node had never seen: they reach the top.
    assert rows[1]["recursive_cached_answers"] > rows[0]["recursive_cached_answers"]
    printed = ("filing", "registration", "1 recursive", "2 recursive", "hit", "top/1000", "p99", "memory")
    assert all(figure in done.stdout for figure in printed)
