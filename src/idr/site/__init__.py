"""The link between the servers of a multi-server site (``idr.core.site``).

Every server listens on its ``link`` port; the others connect to it to read records it holds
(authorisation needs identities, admin groups and parent prefix handles wherever a request
lands), to relay requests its share answers (HTTP clients do not hash), and to receive the
records it takes over when the site grows (re-sharing, ``idr site reshare``).

The link is replication's (``idr.replication.wire``): a mutual HMAC handshake over fresh
nonces with the site's key (``[site] secret``, the same on every server, never sent), then
every frame sealed with AES-256-GCM — secret keys (HS_SECKEY) travel here. The handshake
also compares what each side believes the site is (its servers in order, and the hash): two
servers with different ``[site]`` lists would put handles in different places, so they refuse
to talk, loudly, rather than answer wrongly.
"""

from idr.site.link import SiteLinkServer, SitePeers, site_digest

__all__ = ["SiteLinkServer", "SitePeers", "site_digest"]
