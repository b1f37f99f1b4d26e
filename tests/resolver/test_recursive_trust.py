"""A recursive node with ``[trust] roots`` in its idr.toml (assembled by ``Node`` as ``idr serve``
does) checks every signed record it resolves back to a trust root: the report comes with the
answer, and with ``enforce`` a tampered record is answered as an error naming the value."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from pathlib import Path

from idr.cli.node import init_node
from idr.codec.jws import EVERYTHING, HANDLES_UNDER_THIS_PREFIX, Permission
from idr.core.config import NodeConfig
from idr.core.request import Op, Request
from idr.demo import RunningNode, publish_prefix, register, start_node
from idr.model.errors import ResponseCode
from idr.model.value import HandleValue, ValueReference
from idr.node import Node
from idr.resolver.client import HandleClient
from idr.resolver.keys import generate, write_key_pair
from idr.resolver.trust import issue_cert, sign_record


async def _add(node: RunningNode, handle: str, values: list[HandleValue], identity: ValueReference) -> None:
    resp = await node.service.submit(
        Request(Op.ADD_VALUE, handle, values=tuple(values), identity=identity, overwrite=True)
    )
    assert resp.ok, resp


async def test_a_recursive_node_checks_signatures(tmp_path: Path) -> None:
    top = await start_node(tmp_path, "top", "top", "top", "0.NA", "top-secret-123")
    ent = await start_node(tmp_path, "ent", "enterprise", "enterprise", "66.1", "ent-secret-123")
    rec: Node | None = None
    try:
        await publish_prefix(top, "66.1", [ent.site])
        root, signer = generate("rsa"), generate("dsa")
        root_ref, signer_ref = ValueReference("0.NA/0.NA", 300), ValueReference("0.NA/66.1", 301)
        root_cert = issue_cert(
            root_ref, root.public_key(), [Permission("0.NA/0.NA", EVERYTHING)], root_ref, root
        )
        cert = issue_cert(
            signer_ref,
            signer.public_key(),
            [Permission("0.NA/66.1", HANDLES_UNDER_THIS_PREFIX)],
            root_ref,
            root,
        )
        # the certificates live at the top: the root's on 0.NA/0.NA, the signer's on 0.NA/66.1
        await _add(top, "0.NA/0.NA", [HandleValue(500, "HS_CERT", root_cert.encode())], top.admin)
        await _add(top, "0.NA/66.1", [HandleValue(500, "HS_CERT", cert.encode())], top.admin)
        for name in ("good", "tampered"):
            await register(
                ent, f"66.1/{name}", [(1, "URL", f"https://ent.example/{name}"), (2, "DESC", "battery")]
            )
            values = ent.service.store.get(f"66.1/{name}".upper()).values  # type: ignore[union-attr]
            sig, _ = sign_record(f"66.1/{name}", values, signer_ref, signer)
            await _add(ent, f"66.1/{name}", [sig], ent.admin)
        await _add(ent, "66.1/tampered", [HandleValue(1, "URL", b"https://evil.example/")], ent.admin)

        # the recursive node: idr init --role recursive --root TOP, then [trust] in idr.toml
        data = tmp_path / "rec"
        init_node(data, role="recursive", https="127.0.0.1:0", http="127.0.0.1:0", native="127.0.0.1:0",
                  root=[f"{top.native[0]}:{top.native[1]}"])  # fmt: skip
        write_key_pair(root, data / "root.pem")
        cfg = NodeConfig.load(data)
        cfg.trust.roots = ["root.pem.pub"]
        cfg.trust.enforce = True
        cfg.save()
        rec = Node(NodeConfig.load(data))
        await rec.start()
        assert rec.listeners.http and rec.listeners.native
        base = f"http://127.0.0.1:{rec.listeners.http[1]}/api/federation/resolve?handle="

        def get(handle: str) -> dict[str, object]:
            with urllib.request.urlopen(base + handle, timeout=10) as r:
                return json.loads(r.read())  # type: ignore[no-any-return]

        good = await asyncio.to_thread(get, "66.1/good")
        assert good["code"] == 1
        trust = good["trust"]
        assert isinstance(trust, dict) and trust["ok"] is True and trust["signed"] == [1, 2, 100], trust
        bad = await asyncio.to_thread(get, "66.1/tampered")
        assert bad["code"] == int(ResponseCode.ERROR)
        assert "signature check failed: TAMPERED: value 1 (URL)" in str(bad["message"])
        # the same refusal over the native protocol, and an unsigned record passes as it is
        async with HandleClient(*rec.listeners.native, timeout=5) as c:
            msg = await c.resolve("66.1/tampered", transport="tcp")
            assert msg.response_code == ResponseCode.ERROR
            assert (await c.resolve("66.1/good", transport="tcp")).response_code == ResponseCode.SUCCESS
        await register(ent, "66.1/unsigned", [(1, "URL", "https://ent.example/plain")])
        plain = await asyncio.to_thread(get, "66.1/unsigned")
        assert plain["code"] == 1 and "trust" not in plain
    finally:
        if rec is not None:
            await rec.stop()
            rec.close()
        for n in (top, ent):
            await n.node.stop()
            n.node.close()
