"""Fault injection with real processes: bench/failover.py with a few kill cycles (CI-sized)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "failover.py"


def test_sigkill_cycles_lose_no_acknowledged_write() -> None:
    # The script kills every process it started, also on failure; the timeout bounds it.
    done = subprocess.run(
        [sys.executable, str(BENCH), "--cycles", "3", "--seed", "5", "--json"],
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    res = json.loads(done.stdout.strip().splitlines()[-1])
    assert res["acknowledged_writes"] > 50
    assert res["lost"] == 0
    assert res["found_on_mirror"] == res["acknowledged_writes"]  # the rejoined mirror has them too
    assert res["longest_resolution_gap_s"] < 2.0
    assert res["resolutions"] > 100
