"""``idr resolve --root``: a Handle client walking the federation itself, from the top node's
sites, with no recursive node — referrals followed, the server of a multi-server site chosen by
the handle's hash, a moved prefix (301) found again, bounded when nothing answers."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

from typer.testing import CliRunner

from idr.cli import app
from idr.core.federation import FederatedService, delegation_values
from idr.core.request import Op, Request
from idr.demo import CELL, CELL_GS1_HANDLE, Federation, RunningNode, publish_prefix, register, start_node
from idr.model.errors import ResponseCode
from idr.model.site import HashOption, SiteInfo
from idr.model.value import HandleRecord
from idr.resolver.recursive import RecursiveResolver
from idr.resolver.transport import NativeTransport, root_sites

runner = CliRunner()


def text(result: object) -> str:
    return " ".join(str(getattr(result, "output", "")).split())


async def idr(*args: str) -> tuple[int, str]:
    """The CLI in a worker thread (it runs its own event loop, the nodes run in this one)."""
    result = await asyncio.to_thread(runner.invoke, app, list(args))
    return result.exit_code, text(result)


def addr(node: RunningNode) -> str:
    return f"{node.native[0]}:{node.native[1]}"


async def test_walks_referrals_from_the_top_without_a_recursive_node(fed: Federation) -> None:
    top = fed["top-cq"]
    code, out = await idr("resolve", CELL, "--root", addr(top), "--trace")
    assert code == 0, out
    # 0.NA/88.168.6 is referred (303) by the top to the Sichuan secondary, which delegates it
    # to the Yibin enterprise node: three hops, the last one answers
    walk = out.index("Chongqing"), out.index("PREFIX_REFERRAL"), out.index("Sichuan"), out.index("Yibin")
    assert list(walk) == sorted(walk)
    assert "LFP" in out  # and the record's values
    # the same without --trace: just the values, as from any server
    code, plain = await idr("resolve", CELL, "--root", addr(top), "--type", "URL")
    assert code == 0 and "URL" in plain and "Chongqing" not in plain
    # a GS1 name in root form is located through the federation too
    code, gs1 = await idr("resolve", CELL_GS1_HANDLE, "--root", addr(top))
    assert code == 0, gs1
    # not found is an error that says so
    code, missing = await idr("resolve", "88.168.6/NO-SUCH-CELL", "--root", addr(top))
    assert code == 1 and "HANDLE_NOT_FOUND" in missing


async def test_the_mirror_answers_when_the_primary_root_is_down(fed: Federation) -> None:
    cq, cd = fed["top-cq"], fed["top-cd"]
    sites = await root_sites([cq.native, cd.native])
    assert len(sites) == 2 and sites[0].primary and not sites[1].primary  # 0.NA/0.NA lists both
    await cq.node.stop()
    code, out = await idr(
        "resolve", CELL, "--root", addr(cq), "--root", addr(cd), "--timeout", "1", "--trace"
    )
    assert code == 0, out
    assert "Chengdu" in out and "no answer" in out


async def two_server_site(tmp_path: Path) -> tuple[RunningNode, RunningNode, RunningNode, SiteInfo]:
    """A top node and a service of one site with two servers (two nodes homing 66.1), each
    holding only the handles that hash to it, as a Handle.Net multi-server site does."""
    top = await start_node(tmp_path, "top", "top", "top", "0.NA", "top-secret-123")
    a = await start_node(tmp_path, "a", "node A", "enterprise", "66.1", "a-secret-123")
    b = await start_node(tmp_path, "b", "node B", "enterprise", "66.1", "b-secret-123")
    servers = (
        dataclasses.replace(a.site.servers[0], server_id=1),
        dataclasses.replace(b.site.servers[0], server_id=2),
    )
    site = dataclasses.replace(
        a.site, servers=servers, hash_option=HashOption.WHOLE, attributes=(("desc", "66.1 site"),)
    )
    await publish_prefix(top, "66.1", [site])
    return top, a, b, site


async def test_the_server_is_chosen_by_the_handles_hash(tmp_path: Path) -> None:
    top, a, b, site = await two_server_site(tmp_path)
    try:
        by_server = {1: a, 2: b}
        handles = [f"66.1/item-{i}" for i in range(16)]
        for h in handles:
            await register(by_server[site.server_for(h).server_id], h, [(1, "URL", f"https://x.example/{h}")])
        assert {site.server_for(h).server_id for h in handles} == {1, 2}  # both servers hold some
        engine = RecursiveResolver(await root_sites([top.native]), NativeTransport())
        for h in handles:
            res = await engine.resolve(h)
            assert res.response.ok, (h, res.response)
            holder = by_server[site.server_for(h).server_id]
            assert res.hops[-1].server == addr(holder)
        # a handle asked of the other server is not there: hashing differently would fail
        wrong = by_server[3 - site.server_for(handles[0]).server_id]
        resp = await wrong.service.submit(Request(Op.RESOLUTION, handles[0]))
        assert resp.code == ResponseCode.HANDLE_NOT_FOUND
        # and through the CLI
        for h in handles[:4]:
            code, out = await idr("resolve", h, "--root", addr(top), "--trace")
            assert code == 0 and addr(by_server[site.server_for(h).server_id]) in out, out
    finally:
        for n in (top, a, b):
            await n.node.stop()
            n.node.close()


async def test_a_moved_prefix_301_is_found_again_from_the_root(tmp_path: Path) -> None:
    top, a, b, _ = await two_server_site(tmp_path)
    try:
        await register(a, "66.1/moving", [(1, "URL", "https://a.example/")])
        await register(b, "66.1/moving", [(1, "URL", "https://b.example/")])
        await publish_prefix(top, "66.1", [a.site])
        engine = RecursiveResolver(await root_sites([top.native]), NativeTransport())
        assert (await engine.resolve("66.1/moving")).response.values[0].data == b"https://a.example/"
        # the prefix moves to B: A no longer homes it (301), the top now names B
        resp = await a.service.submit(Request(Op.UNHOME_NA, "66.1", identity=a.admin))
        assert resp.ok, resp
        await publish_prefix(top, "66.1", [b.site])
        engine.answers.clear()  # the record's own cache entry expired; the service is still cached
        res = await engine.resolve("66.1/moving")
        assert res.response.ok and res.response.values[0].data == b"https://b.example/"
        assert [h.code for h in res.hops] == [1, 301, 1, 1]  # cached service, 301, top, B
        assert "stale service" in res.hops[1].note
        # a service that does not serve the prefix at all: 301 is the answer, and names who said it
        assert isinstance(top.service, FederatedService)
        rec = HandleRecord("0.NA/66.9", tuple(delegation_values([a.site])))
        await top.service.commit_internal("test", None, [("0.NA/66.9", rec)])
        code, out = await idr("resolve", "66.9/x", "--root", addr(top))
        assert code == 1 and "SERVER_NOT_RESPONSIBLE" in out and "node A" in out
    finally:
        for n in (top, a, b):
            await n.node.stop()
            n.node.close()


async def test_no_root_answering_is_a_clear_error_soon() -> None:
    code, out = await idr("resolve", "88.1/x", "--root", "127.0.0.1:9", "--timeout", "0.3")
    assert code == 1 and "no root server answered" in out and "Traceback" not in out
    code, out = await idr("resolve", "88.1/x", "--root", "127.0.0.1:9", "--http")
    assert code == 1 and "not with --http" in out
