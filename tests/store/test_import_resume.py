"""Resumable bulk import on both engines: checkpoints commit with their batch, a kill -9
loses nothing and repeats nothing, rejected lines land in FILE.errors.jsonl once."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from idr.cli import app
from idr.core.config import NodeConfig
from idr.core.importer import checkpoint_name, errors_path_for
from idr.core.stats import REGISTERED, durable_counts, is_counter_key
from idr.model.value import HandleRecord, HandleValue
from idr.node import open_store
from idr.store import Store, StoreError

from . import pg

runner = CliRunner()
ENGINES = ["sqlite", "postgres"]


def _rec(i: int) -> HandleRecord:
    return HandleRecord(f"88.100/c-{i}", (HandleValue(1, "URL", b"https://example.cn/"),))


def test_checkpoint_commits_with_its_batch(store: Store) -> None:
    assert store.checkpoint("f|1|2") == 0
    store.bulk_load([_rec(1), _rec(2)], checkpoint=("f|1|2", 2))
    assert store.checkpoint("f|1|2") == 2
    store.bulk_load([_rec(3)], checkpoint=("f|1|2", 3))
    assert store.checkpoint("f|1|2") == 3

    def broken() -> Iterator[HandleRecord]:
        yield _rec(4)
        raise RuntimeError("source broke")

    with pytest.raises(StoreError):
        store.bulk_load(broken(), checkpoint=("f|1|2", 4))
    assert store.checkpoint("f|1|2") == 3 and store.get("88.100/C-4") is None
    # An empty batch may move the checkpoint (trailing rejected lines).
    store.bulk_load([], checkpoint=("f|1|2", 9))
    assert store.checkpoint("f|1|2") == 9 and store.checkpoint("other") == 0


def _line(i: int) -> str:
    if i % 97 == 0:
        bad_value = {"index": 1, "type": "HS_NOPE", "data": "x"}
        return json.dumps({"handle": f"88.100/bad-{i}", "values": [bad_value]})
    if i % 89 == 0:
        return "{not json"
    return json.dumps({"handle": f"88.100/imp-{i}", "values": [{"index": 1, "type": "URL", "data": f"u{i}"}]})


def _node(tmp_path: Path, engine: str) -> Path:
    data = tmp_path / "node"
    extra = ["--store", "postgres", "--dsn", pg.new_database()] if engine == "postgres" else []
    r = runner.invoke(
        app, ["init", "--data", str(data), "--prefix", "88.100", "--admin-secret", "s3cret-key", *extra]
    )
    assert r.exit_code == 0, r.output
    return data


def _bad_lines(n: int) -> list[int]:
    return [i for i in range(1, n + 1) if i % 97 == 0 or i % 89 == 0]


@pytest.mark.parametrize("engine", ENGINES)
def test_import_resumes_after_kill_9(tmp_path: Path, engine: str) -> None:
    data = _node(tmp_path, engine)
    n = 40_000
    src = tmp_path / "in.jsonl"
    src.write_text("".join(_line(i) + "\n" for i in range(1, n + 1)))
    name = checkpoint_name(src)

    proc = subprocess.Popen(
        [sys.executable, "-c", "from idr.cli import main; main()", "import", "--data", str(data), str(src),
         "--batch", "200"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    watcher = open_store(NodeConfig.load(data))
    try:
        deadline = time.monotonic() + 60
        while watcher.checkpoint(name) < 2000:
            assert proc.poll() is None, "import ended before it could be interrupted"
            assert time.monotonic() < deadline, "import made no progress in 60 s"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        assert proc.returncode == -signal.SIGKILL
        at_kill = watcher.checkpoint(name)
        assert 2000 <= at_kill < n
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        assert proc.stderr is not None
        proc.stderr.close()
        watcher.close()

    r = runner.invoke(app, ["import", "--data", str(data), str(src), "--batch", "1000"])
    assert r.exit_code == 0, r.output
    assert "resumed after line" in " ".join(r.output.split())

    bad = _bad_lines(n)
    good = n - len(bad)
    store = open_store(NodeConfig.load(data))
    try:
        assert store.checkpoint(name) == n
        assert store.count("88.100") == good
        # Each good line committed exactly once across both runs: none lost, none repeated.
        entries = store.log_since(0, limit=10**6)
        imported = [w.key for e in entries if e.op == "import" for w in e.writes if not is_counter_key(w.key)]
        assert len(imported) == len(set(imported)) == good
        # …and counted as registered exactly once: the counters commit with the batches.
        assert durable_counts(store)[REGISTERED] == good
    finally:
        store.close()
    errors = [json.loads(x)["line"] for x in errors_path_for(src).read_text().splitlines()]
    assert errors == bad


@pytest.mark.parametrize("engine", ENGINES)
def test_import_writes_errors_file_and_rerun_is_a_no_op(tmp_path: Path, engine: str) -> None:
    data = _node(tmp_path, engine)
    n = 500
    src = tmp_path / "in.jsonl"
    src.write_text("".join(_line(i) + "\n" for i in range(1, n + 1)))
    r = runner.invoke(app, ["import", "--data", str(data), str(src), "--batch", "64"])
    assert r.exit_code == 0, r.output
    bad = _bad_lines(n)
    errors = [json.loads(x) for x in errors_path_for(src).read_text().splitlines()]
    assert [e["line"] for e in errors] == bad
    assert all(e["reason"] for e in errors)

    store = open_store(NodeConfig.load(data))
    try:
        seq = store.last_seq()
        imported = [
            w.key
            for e in store.log_since(0)
            if e.op == "import"
            for w in e.writes
            if not is_counter_key(w.key)
        ]
        assert len(imported) == len(set(imported)) == n - len(bad)
    finally:
        store.close()

    again = runner.invoke(app, ["import", "--data", str(data), str(src)])
    assert again.exit_code == 0, again.output
    assert f"resumed after line {n}" in " ".join(again.output.split())
    assert [json.loads(x)["line"] for x in errors_path_for(src).read_text().splitlines()] == bad
    store = open_store(NodeConfig.load(data))
    try:
        assert store.last_seq() == seq  # nothing written
    finally:
        store.close()

    fresh = runner.invoke(app, ["import", "--data", str(data), str(src), "--restart"])
    assert fresh.exit_code == 0 and f"{n - len(bad)} handles loaded" in " ".join(fresh.output.split())
