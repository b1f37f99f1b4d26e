"""Which server of a multi-server site holds a handle: the hash as Handle.Net computes it.

The expected numbers were printed by the reference library itself (hdllib 9.2's
``net.handle.hdllib.SiteInfo`` main, built from the public source under /work/interop):
hash by prefix, by suffix and by the whole handle. A client that hashes differently asks the
wrong server of the site and gets HANDLE_NOT_FOUND for a handle that exists.
"""

from __future__ import annotations

import pytest

from idr.model.site import HashOption, ServerInfo, SiteInfo, handle_hash

# handle → (by prefix, by suffix, by whole handle), from hdllib
REFERENCE = {
    "88.100/a": (1248849512, 783072809, 299657194),
    "88.100/B": (1248849512, 2063250801, 18894019),
    "0.NA/88.100": (36223079, 1248849512, 647383543),
    "88.100/电池-1": (1248849512, 805355292, 1144641563),
    "88.100/ß": (1248849512, 1534084981, 978079716),  # ASCII-only upper-casing: not "SS"
    "88.100": (36223079, 1248849512, 1248849512),  # no slash: prefix 0.NA, all suffix
    "88.118.8/VIN-0001": (1993617733, 1574798802, 1816399909),
    "abc/xyz": (891676978, 1906389438, 538653469),
}


@pytest.mark.parametrize("handle", sorted(REFERENCE))
def test_hash_is_hdllibs(handle: str) -> None:
    got = tuple(handle_hash(handle, o) for o in (HashOption.PREFIX, HashOption.SUFFIX, HashOption.WHOLE))
    assert got == REFERENCE[handle]


@pytest.mark.parametrize("n", [2, 3, 4])
def test_server_for_picks_hash_modulo_servers(n: int) -> None:
    servers = tuple(ServerInfo(i + 1, bytes(12) + bytes([127, 0, 0, i + 1])) for i in range(n))
    for option in HashOption:
        site = SiteInfo(hash_option=option, servers=servers)
        for handle, hashes in REFERENCE.items():
            assert site.server_for(handle) is servers[hashes[option] % n]
