"""Make tests/vectors/trust/idr: a record signed by idr, with its certificate chain, in the
layout /tmp's hdllib harness reads (handles.txt: "handle file"; each file a u32 count and the
values in wire encoding; root_pub.bin: the root's HS_PUBKEY bytes). Run once; the bytes are
kept, and the README says what hdllib's HandleRecordTrustVerifier answered for them.

    python tests/vectors/trust/make_idr.py tests/vectors/trust/idr
"""

from __future__ import annotations

import sys
from pathlib import Path

from idr.codec.jws import EVERYTHING, HANDLES_UNDER_THIS_PREFIX, Permission
from idr.codec.keys import encode_public_key
from idr.codec.values import encode_admin, encode_values
from idr.model.value import PERM_SECRET, AdminRecord, HandleValue, ValueReference
from idr.resolver.keys import generate
from idr.resolver.trust import issue_cert, sign_record

NOW = 1_790_000_000  # 2026-09-21: iat of every signature here; valid three years from it


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    root, inter, signer = generate("rsa"), generate("dsa"), generate("rsa")
    root_ref = ValueReference("0.0/0.0", 300)  # hdllib trusts roots at 0.0/0.0 only
    inter_ref = ValueReference("0.NA/88.100", 300)
    signer_ref = ValueReference("0.NA/88.100", 301)
    life = 3 * 366 * 86400
    everything = [Permission("0.0/0.0", EVERYTHING)]
    under = [Permission("0.NA/88.100", HANDLES_UNDER_THIS_PREFIX)]
    root_cert = issue_cert(root_ref, root.public_key(), everything, root_ref, root, now=NOW, lifetime=life)
    inter_cert = issue_cert(inter_ref, inter.public_key(), under, root_ref, root, now=NOW, lifetime=life)
    # 301 is certified by 300 (the DSA key); its certificate names the rest of the chain
    chain = ["0.NA/88.100", "0.0/0.0"]
    signer_cert = issue_cert(
        signer_ref, signer.public_key(), under, inter_ref, inter, chain=chain, now=NOW, lifetime=life
    )
    admin = encode_admin(AdminRecord("0.NA/88.100", 300, 0xFFF))
    values = [
        HandleValue(1, "URL", b"https://example.org/signed-by-idr", timestamp=NOW),
        HandleValue(2, "EMAIL", "运维@example.org".encode(), timestamp=NOW),
        HandleValue(100, "HS_ADMIN", admin, timestamp=NOW),
        HandleValue(300, "HS_SECKEY", b"not public", permissions=PERM_SECRET, timestamp=NOW),
    ]
    by_dsa, _ = sign_record("88.100/signed-by-idr", values, inter_ref, inter, now=NOW)
    by_rsa, _ = sign_record("88.100/signed-by-idr-rsa", values, signer_ref, signer,
                            chain=["301:0.NA/88.100"], now=NOW)  # fmt: skip
    files = {
        "88.100/signed-by-idr": [*values, by_dsa],
        "88.100/signed-by-idr-rsa": [*values, by_rsa],
        "0.NA/88.100": [
            HandleValue(500, "HS_CERT", inter_cert.encode(), timestamp=NOW),
            HandleValue(301, "HS_CERT", signer_cert.encode(), timestamp=NOW),
        ],
        "0.0/0.0": [HandleValue(500, "HS_CERT", root_cert.encode(), timestamp=NOW)],
    }
    lines = []
    for handle, vals in files.items():
        name = handle.replace("/", "_") + ".values"
        (out / name).write_bytes(encode_values(vals))
        lines.append(f"{handle} {name}")
    (out / "handles.txt").write_text("\n".join(lines) + "\n")
    (out / "root_pub.bin").write_bytes(encode_public_key(root.public_key()))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
