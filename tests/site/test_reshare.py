"""Adding servers to a site (docs/sites.md, "Adding servers"): a site of two servers grows to
four — the new servers initialised with the four-server list, the old ones given it in
``[site] servers`` (serial raised), all restarted — and ``idr site reshare`` on each old server
moves the records the hash now gives the new ones; every handle then lives on exactly the
server the four-server hash names, and every server's HTTP API reaches it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
from typer.testing import CliRunner

from idr.cli import app
from idr.cli.node import init_node
from idr.core.config import NodeConfig, SiteConfig
from idr.model.handle import normalize_key
from idr.server.server_key import SERVER_KEY_NAME
from tests.site.conftest import INSECURE, PREFIX, SECRET, init_site, server_specs, start_site, stop_site
from tests.site.test_site import basic, store, url_value


async def test_a_site_of_two_grows_to_four(tmp_path: Path) -> None:
    specs = server_specs(4)
    dirs = init_site(tmp_path, specs[:2])
    secret = NodeConfig.load(dirs[0]).site.secret
    handles = [f"88.100/grow-{i}" for i in range(40)]
    site = await start_site(dirs)
    try:
        async with aiohttp.ClientSession(headers=basic()) as http:
            for n, h in enumerate(handles):
                body = {"values": [url_value(f"https://example.org/{h}")]}
                async with http.put(f"{site.https(n % 2)}/api/handles/{h}", json=body, ssl=INSECURE) as r:
                    assert r.status in (200, 201), await r.text()
        before = {h: site.owner(h) for h in [*handles, "0.NA/88.100"]}
    finally:
        await stop_site(site)

    # The old servers learn the four-server list (and a new serial); the new ones are made
    # with it, sharing the site's key pair and link key.
    for d in dirs:
        cfg = NodeConfig.load(d)
        cfg.site.servers = list(specs)
        cfg.site.serial += 1
        cfg.save()
    for i in (2, 3):
        data = tmp_path / f"s{i}"
        init_node(
            data,
            PREFIX,
            secret=SECRET,
            server_key=dirs[0] / SERVER_KEY_NAME,
            site=SiteConfig(servers=list(specs), index=i, secret=secret, serial=2),
        )
        dirs.append(data)
    site = await start_site(dirs)
    try:
        after = {h: site.owner(h) for h in before}
        changed = [h for h in before if before[h] != after[h]]
        assert changed, "some handles move to the new servers"
        assert all(after[h] in (2, 3) for h in changed)  # growing only moves handles to new servers

        runner = CliRunner()
        moved = 0
        for i in (0, 1):
            res = await asyncio.to_thread(runner.invoke, app, ["site", "reshare", "--data", str(dirs[i])])
            assert res.exit_code == 0, res.output
            moved += int(res.output.split(f"server {i}: ")[1].split()[0])
        # Prefix handles the new servers made for themselves at init are overwritten by the
        # moved originals; every moved record counted once.
        assert moved == len(changed)
        for h, owner in after.items():
            held = [i for i in range(4) if store(site, i).get(normalize_key(h)) is not None]
            assert held == [owner], (h, held, owner)
        async with aiohttp.ClientSession(headers=basic()) as http:
            for n, h in enumerate(handles):
                async with http.get(f"{site.https((n + 3) % 4)}/api/handles/{h}", ssl=INSECURE) as r:
                    doc = await r.json()
                assert doc["responseCode"] == 1 and doc["values"][0]["data"]["value"].endswith(h), doc
            # The admin (whose record may have moved) still writes, through any server.
            body = {"values": [url_value("https://example.org/after")]}
            async with http.put(f"{site.https(3)}/api/handles/88.100/after", json=body, ssl=INSECURE) as r:
                assert r.status in (200, 201), await r.text()
        # A second run moves nothing: the move is finished.
        res = await asyncio.to_thread(runner.invoke, app, ["site", "reshare", "--data", str(dirs[0])])
        assert res.exit_code == 0 and "server 0: 0 records moved" in res.output, res.output
    finally:
        await stop_site(site)
