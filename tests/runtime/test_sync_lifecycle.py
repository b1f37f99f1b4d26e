"""The prefix lifecycle takes the one write path: in sync replication an approval is
acknowledged only once a mirror holds it (issue 11 item 3; before, ``commit_internal``
bypassed the durability wait and the approval returned at once with no mirror holding it)."""

from __future__ import annotations

import asyncio
import secrets
import time
from pathlib import Path

import pytest

from idr.core.config import ReplicationConfig
from idr.core.prefixes import PrefixRegistry, uscc_check_char
from idr.demo import RunningNode, pick_port, start_node
from idr.model.errors import HandleError
from idr.model.handle import normalize_key, prefix_handle

USCC = "91511500MA62XB4P3" + uscc_check_char("91511500MA62XB4P3")


async def two_sites(tmp_path: Path) -> tuple[RunningNode, RunningNode]:
    addr = {k: f"127.0.0.1:{pick_port(0)}" for k in ("a", "b")}
    key_of_both = secrets.token_urlsafe(32)  # a generated key, as idr replication setup makes
    sites = []
    for key, role in (("a", "primary"), ("b", "mirror")):
        repl = ReplicationConfig(
            listen=addr[key],
            peers=[a for k, a in addr.items() if k != key],
            secret=key_of_both,
            mode="sync",
            role=role,
            ack_timeout=1.0,
        )
        sites.append(
            await start_node(
                tmp_path, key, f"site {key}", "secondary", "88.168", "sec-secret-1", replication=repl
            )
        )
    primary = sites[0]
    deadline = time.monotonic() + 30
    while primary.node.replicator is None or primary.node.replicator.status()["mirrors"] < 1:
        assert time.monotonic() < deadline, "the mirror did not connect"
        await asyncio.sleep(0.05)
    return sites[0], sites[1]


async def test_an_approval_is_acknowledged_only_once_the_mirror_holds_it(tmp_path: Path) -> None:
    primary, mirror = await two_sites(tmp_path)
    try:
        reg = PrefixRegistry(primary.federated, "88.168")
        app = await reg.apply(
            enterprise="Yibin cells", uscc=USCC, contact="q@example.org", secret="yb-secret-1"
        )
        approved = await reg.approve(app.id, primary.admin)
        # Acknowledged: the mirror's store holds the new prefix handle already, no waiting.
        key = normalize_key(prefix_handle(approved.prefix))
        assert mirror.service.store.get(key) is not None
        assert mirror.service.store.last_seq() == primary.service.store.last_seq()

        # With the mirror gone, the next approval is not acknowledged (sync replication).
        await mirror.node.stop()
        other = await asyncio.wait_for(_apply_expecting_refusal(reg), 10.0)
        assert "NOT acknowledged" in other
    finally:
        for n in (mirror, primary):
            await n.node.stop()
            n.node.close()


async def _apply_expecting_refusal(reg: PrefixRegistry) -> str:
    with pytest.raises(HandleError) as refused:
        await reg.apply(enterprise="Shell Co", uscc=USCC, contact="x@example.org", secret="shell-secret-1")
    return refused.value.message


def test_import_into_a_mirrors_data_directory_is_refused(tmp_path: Path) -> None:
    """A mirror's store takes only its primary's log: an import there would fork the log."""
    import secrets
    import subprocess
    import sys

    from tests.procs import free_port, idr

    data = tmp_path / "mirror"
    idr("init", "--data", str(data), "--prefix", "88.168", "--admin-secret", "sec-secret-1")
    idr("replication", "setup", "--data", str(data), "--listen", f"127.0.0.1:{free_port()}",
        "--peer", f"127.0.0.1:{free_port()}", "--secret", secrets.token_urlsafe(32),
        "--role", "mirror")  # fmt: skip
    src = tmp_path / "in.jsonl"
    src.write_text('{"handle": "88.168/x", "values": [{"index": 1, "type": "URL", "data": "https://x"}]}\n')
    r = subprocess.run(
        [sys.executable, "-c", "from idr.cli import main; main()", "import", "--data", str(data), str(src)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode != 0 and "mirror" in r.stdout + r.stderr, r.stdout + r.stderr
