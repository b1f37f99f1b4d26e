"""Filings over one kept HTTPS connection to the top, side by side with a new connection each.

    python bench/filing_link.py --filings 300 --concurrency 4

A top and a secondary node (``idr.demo.start_node``: assembled from their data directories as
``idr serve`` does) on loopback. The secondary files ``--filings`` prefixes with the top
(``send_filing``, the request an approval sends) two ways, alternating rounds so both see the
same machine load: ``kept`` over its ``ParentLink`` (TLS connections kept alive and reused,
as a node now does), and ``new`` with the link closed before every filing (a TCP and TLS
handshake per filing, as before; the certificate is no longer reloaded each time, so this
understates the old cost). Prints filings/s of each, the ratio, and the connections the top
accepted for each.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path


async def run(filings: int, concurrency: int, rounds: int) -> dict[str, float]:
    from idr.core.prefixes import Filing, uscc_check_char
    from idr.demo import publish_prefix, start_node
    from idr.resolver.filing import FilingTarget, send_filing

    with tempfile.TemporaryDirectory(prefix="filing-link-") as tmp:
        base = Path(tmp)
        top = await start_node(base, "top", "top", "top", "0.NA", "top-bench-secret")
        sec = await start_node(base, "sec", "secondary", "secondary", "88.168", "sec-bench-secret")
        try:
            await publish_prefix(top, "88.168", [sec.site], admin_secret=sec.secret, derived=True)
            guard = top.node.http_guards.connections if top.node.http_guards is not None else None
            assert guard is not None
            target = FilingTarget(top.https_url, sec.admin, sec.secret, top.cert)
            uscc = "91510100MA61R8XB2" + uscc_check_char("91510100MA61R8XB2")
            seconds = {"kept": 0.0, "new": 0.0}
            accepted = {"kept": 0, "new": 0}
            n = 0

            async def one(mode: str) -> None:
                nonlocal n
                n += 1
                filing = Filing(f"88.168.{n}", "88.168", f"enterprise {n}", uscc, "ops@example.org")
                if mode == "new":
                    fresh = FilingTarget(target.url, target.identity, target.secret, target.cafile)
                    try:
                        await send_filing(fresh, filing)
                    finally:
                        await fresh.link.close()
                else:
                    await send_filing(target, filing)

            per_round = max(1, filings // rounds)
            for _ in range(rounds):
                for mode in ("kept", "new"):
                    before = guard.accepted
                    t0 = time.perf_counter()
                    for start in range(0, per_round, concurrency):
                        k = min(concurrency, per_round - start)
                        await asyncio.gather(*(one(mode) for _ in range(k)))
                    seconds[mode] += time.perf_counter() - t0
                    accepted[mode] += guard.accepted - before
            await target.link.close()
            total = per_round * rounds
            out = {f"{m}_per_s": total / seconds[m] for m in seconds}
            out.update({f"{m}_connections": float(accepted[m]) for m in accepted})
            out["filings"] = float(total)
            return out
        finally:
            for node in (sec, top):
                await node.node.stop()
                node.node.close()


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--filings", type=int, default=300, help="filings each way")
    p.add_argument("--concurrency", type=int, default=4, help="filings in flight")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds of each way")
    a = p.parse_args(argv)
    fig = asyncio.run(run(a.filings, a.concurrency, a.rounds))
    print(
        f"{fig['filings']:.0f} filings each way, {a.concurrency} in flight: "
        f"kept connection {fig['kept_per_s']:,.1f}/s ({fig['kept_connections']:.0f} connections) | "
        f"new connection each {fig['new_per_s']:,.1f}/s ({fig['new_connections']:.0f} connections) | "
        f"ratio {fig['kept_per_s'] / fig['new_per_s']:.2f}x",
        flush=True,
    )
    return fig


if __name__ == "__main__":
    main()
