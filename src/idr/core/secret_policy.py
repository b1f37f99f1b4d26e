"""Which secrets a node accepts from its operator: an admin's secret key, the replication key.

* An admin secret (``idr init --admin-secret``, a prefix application's secret) is typed by a
  person and checked online, where the login back-off (``idr.server.throttle``) limits
  guessing; it must not be empty, short (at least ``MIN_ADMIN_SECRET`` characters) or one of
  the few strings every guesser tries first.
* The replication key is different: a captured link handshake (HMAC of the key over two
  nonces sent in clear) lets an eavesdropper test guesses offline, as fast as they like, so it
  must be a machine-generated key of at least 256 bits — ``generate_link_secret()``,
  ``secrets.token_urlsafe(32)`` — never a passphrase. Accepted: 43+ characters of base64url
  or 64+ hex digits, with the spread of characters random bytes have.
"""

from __future__ import annotations

import itertools
import re
import secrets

MIN_ADMIN_SECRET = 8
LINK_SECRET_BYTES = 32  # 256 bits
_COMMON = frozenset(
    {
        "password",
        "password1",
        "passw0rd",
        "12345678",
        "123456789",
        "1234567890",
        "87654321",
        "11111111",
        "00000000",
        "qwertyui",
        "qwerty123",
        "abcdefgh",
        "abc12345",
        "admin123",
        "administrator",
        "iloveyou",
        "letmein1",
        "changeme",
        "secret12",
        "s3cret12",
    }
)
_BASE64URL = re.compile(r"[A-Za-z0-9_-]{43,}={0,2}")
_HEX = re.compile(r"[0-9A-Fa-f]{64,}")


def _sequence(text: str) -> bool:
    """``abcdefgh``, ``87654321``: each character one more (or one less) than the one before."""
    steps = {ord(b) - ord(a) for a, b in itertools.pairwise(text)}
    return steps in ({1}, {-1})


def admin_secret_problem(secret: str) -> str | None:
    """Why ``secret`` is not acceptable as an admin's secret key, or None."""
    if not secret.strip():
        return "the admin secret must not be empty"
    if len(secret) < MIN_ADMIN_SECRET:
        return f"the admin secret must be at least {MIN_ADMIN_SECRET} characters"
    if len(set(secret)) == 1 or _sequence(secret) or secret.lower() in _COMMON:
        return "the admin secret is one of the first a guesser tries: choose another"
    return None


def link_secret_problem(secret: str) -> str | None:
    """Why ``secret`` is not acceptable as a replication key, or None."""
    hint = (
        "generate one: idr replication setup without --secret, "
        "or python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
    )
    if _BASE64URL.fullmatch(secret) and len(set(secret.rstrip("="))) >= 20:
        return None
    if _HEX.fullmatch(secret) and len(set(secret.lower())) >= 12:
        return None
    return (
        f"the replication secret must be a generated key of at least {LINK_SECRET_BYTES * 8} bits "
        f"(43+ base64url characters or 64+ hex digits), not a passphrase: {hint}"
    )


def generate_link_secret() -> str:
    """A fresh 256-bit replication key (drawn again in the ~1-in-a-million case that its
    characters happen to be too few distinct ones to pass the check above)."""
    while True:
        secret = secrets.token_urlsafe(LINK_SECRET_BYTES)
        if link_secret_problem(secret) is None:
            return secret
