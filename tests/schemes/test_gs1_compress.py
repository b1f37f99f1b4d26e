"""Compressed GS1 Digital Links: input → output vectors observed from other encoders, and
the round trip."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from idr.schemes import gs1, gs1_compress
from idr.schemes.gs1_syntax import CSET82, Gs1Error

# (uncompressed path, compressed without optimisation codes). Observed as the output of
# GS1DigitalLinkToolkit.js (gs1/GS1DigitalLinkCompressionPrototype), compressGS1DigitalLink
# with useOptimisations=false, except the 235, 414/7040 and 8004/7040 rows, which that
# toolkit refuses: those are listed in Solidsoft-Reply/Gs1DigitalLinkLib
# Tests/Features/CompressGs1DigitalLink.feature (a .NET port of the toolkit), as are most
# of the others.
VECTORS = [
    ("/00/998440410914660971", "AN2yxDhfaiaw"),
    ("/01/05412345000013", "AQnYUc1gmg"),
    ("/01/09780345418913", "ARHKVAdpQg"),
    ("/01/05412345000013/10/ABC123/21/72292641703", "AQnYUc1gmiCNV4JGQhcNT6K6c"),
    (
        "/01/05412345000013/22/AJY3095721P49/10/ABC123/21/72292641703",
        "AQnYUc1gmiCNV4JGQhcNT6K6cibQCWN9Pee9tT-PQ",
    ),
    ("/01/05412345000013/235/8TFV883a904GH%263", "AQnYUc1gmkax7ipGrOHDPC5YNI8hMz"),
    ("/01/05392000229648/10/LOT01/21/SERIAL01", "AQnO2IRCICDKWcnpqQtCQiJABemo"),
    ("/253/3060077601309", "JTLIetaiHYA"),
    ("/401/0541234537290A41%26GHpp33", "QBl2DVoxZM2jVm3ZOWEFoxTR5HDgzZg"),
    ("/414/5060917510004/254/RP56J920471", "JUa0T-eifdtOO9UFEmlYwv3Q"),
    ("/414/5060917510004/7040/5KFX", "QUSaVjC_dHBAVlCrg"),
    ("/8004/0541234537290A41%26GHpp33/7040/7BVR", "cEB2CqjAAkuwatGLJm0as27JywgtGKaPI4cGbM"),
    ("/8003/04965031954585", "gAMJCAXukTMA"),
    ("/8010/0541234537290A41%23GH33/8011/6639047221", "gBCVYNWjFkzaNWbdk5YQWjFHHkM2cAI0xdvpGo"),
    ("/8018/411369833821910265/8019/4003812", "gBhbV6rzBENPmAGXPRfk"),
]
# Observed as the output of GS1DigitalLinkToolkit.js with useOptimisations=true.
OPTIMISED = [
    ("/01/09506000134352/10/ABC/21/xyz1234?17=290101", "GhFKk4XBoIdXjPjlnrtvwjaag"),
    ("/01/09506000134352?3103=000195", "LRFKk4XBoAAYY"),
    ("/414/9506000134376/254/DOCK3", "nYpUnC4OhlDOCK3"),
    ("/01/09506000134352/10/0329", "CxFKk4XBoAgKS"),  # leading zero kept on decoding
]


@pytest.mark.parametrize(("path", "compressed"), VECTORS)
def test_vectors(path: str, compressed: str) -> None:
    dl = gs1.parse_path(path)
    assert gs1_compress.compress(dl.elements(), optimise=False) == compressed
    assert gs1.parse_uri(f"https://id.gs1.org/{compressed}") == dl


@pytest.mark.parametrize(("link", "compressed"), OPTIMISED)
def test_optimised_vectors(link: str, compressed: str) -> None:
    path, _, query = link.partition("?")
    dl = gs1.parse_path(path, query)
    assert gs1_compress.compress(dl.elements()) == compressed
    assert gs1.parse_uri(f"https://id.gs1.org/{compressed}") == dl


def test_non_gs1_pairs_are_decoded_and_set_aside() -> None:
    # "F" nibble: key "k1" (2 base64url characters), value "v1" (base64url encoding).
    bits = "1111" + f"{2:07b}" + f"{36:06b}{53:06b}" + "011" + f"{2:07b}" + f"{47:06b}{53:06b}"
    gtin = gs1_compress.compress([("01", "05412345000013")])
    n = 8 + gs1_compress._value_bits(14)  # AI 01, then 14 digits as one number
    binary = "".join(f"{gs1_compress.ALPHABET.index(c):06b}" for c in gtin)[:n] + bits
    binary += "0" * (-len(binary) % 6)
    segment = "".join(gs1_compress.ALPHABET[int(binary[i : i + 6], 2)] for i in range(0, len(binary), 6))
    elements, others = gs1_compress.decompress_all(segment)
    assert elements == [("01", "05412345000013")] and others == [("k1", "v1")]


@pytest.mark.parametrize("bad", ["", "!!!!", "A" * 2000, "_____", "AQnYUc1gmiCNV4JH"])
def test_bad_segments_are_refused(bad: str) -> None:
    with pytest.raises(Gs1Error) as e:
        gs1_compress.decompress(bad)
    assert e.value.rule == "compression"


_x = st.text(alphabet=sorted(CSET82), min_size=1, max_size=20)


@given(
    body=st.text(alphabet="0123456789", min_size=13, max_size=13), lot=st.none() | _x, serial=st.none() | _x
)
def test_round_trip(body: str, lot: str | None, serial: str | None) -> None:
    quals = [(ai, v) for ai, v in (("10", lot), ("21", serial)) if v is not None]
    dl = gs1.make("01", gs1.with_check_digit(body), quals, [("17", "290101")])
    for optimise in (True, False):
        segment = gs1_compress.compress(dl.elements(), optimise=optimise)
        assert gs1.parse_uri(f"https://example.com/{segment}") == dl


@given(st.text(alphabet=gs1_compress.ALPHABET, max_size=60))
def test_decompress_raises_only_gs1_errors(segment: str) -> None:
    with contextlib.suppress(Gs1Error):
        gs1.parse_uri(f"https://example.com/{segment}")
