"""The collector's server pace (idr.server.gcpace): set by ``idr serve`` only, shown in /metrics."""

from __future__ import annotations

import gc
import subprocess
import sys

from idr.server.gcpace import SERVER_THRESHOLDS, collector_metrics


def test_pace_for_server_sets_the_thresholds_in_its_process_only() -> None:
    code = (
        "import gc; from idr.server.gcpace import pace_for_server; before = gc.get_threshold(); "
        "pace_for_server(); print(before, gc.get_threshold())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["(700,", "10,", "10)", *str(SERVER_THRESHOLDS).split()]
    assert gc.get_threshold() == (700, 10, 10)  # importing it changed nothing here (library use)


def test_collector_metrics_count_this_process_collections() -> None:
    before = collector_metrics()
    assert set(before) == {f"idr_gc_collections_gen{i}" for i in range(3)} | {"idr_gc_threshold_gen0"}
    assert before["idr_gc_threshold_gen0"] == gc.get_threshold()[0]
    gc.collect()
    after = collector_metrics()
    assert after["idr_gc_collections_gen2"] == before["idr_gc_collections_gen2"] + 1
