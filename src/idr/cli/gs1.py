"""``idr gs1 …``: GS1 keys offline — check one against GS1's rules, write its forms."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console

from idr.cli.common import fail

out = Console(highlight=False, soft_wrap=True)

RootOpt = Annotated[
    str, typer.Option("--root", help="resolver root the links start with (no trailing slash)")
]


def _key(text: str) -> object:
    """The GS1 key of ``text``: any written form, or the handle of a GS1 record
    (``GS1.9506000/01/…``, ``GS1/01/…``)."""
    from idr.schemes import gs1
    from idr.schemes.common import SchemeError
    from idr.schemes.gs1_syntax import Gs1Error

    t = text.strip()
    try:
        prefix, sep, suffix = t.partition("/")
        if sep and suffix and prefix.split(".")[0].upper() == gs1.DEFAULT_ROOT and not t.startswith("/"):
            return gs1.from_handle(t)
        return gs1.parse(t)
    except Gs1Error as e:
        fail(f"{text!r}: {e.message}" + (f" (GS1 rule: {e.rule})" if e.rule else ""))
    except SchemeError as e:
        fail(f"{text!r}: {e.message}")


def register(app: typer.Typer) -> None:
    gs1_app = typer.Typer(help="GS1 keys: check one against GS1's rules, write its Digital Link forms.")
    app.add_typer(gs1_app, name="gs1")

    @gs1_app.command("link")
    def link(
        identifier: Annotated[
            str,
            typer.Argument(
                help="a GS1 key in any form (Digital Link, element string, scan data, GTIN) "
                "or the handle of a GS1 record"
            ),
        ],
        root: RootOpt = "https://id.gs1.org",
        as_json: Annotated[bool, typer.Option("--json", help="every form as JSON")] = False,
    ) -> None:
        """Check IDENTIFIER against GS1's rules and print its compressed GS1 Digital Link
        (GS1 Digital Link 1.1 compression); --json prints every form."""
        from idr.schemes import gs1
        from idr.schemes.gs1_compress import compress

        dl = _key(identifier)
        assert isinstance(dl, gs1.DigitalLink)
        base = root.rstrip("/")
        compressed = f"{base}/{compress(dl.elements())}"
        if as_json:
            doc = {
                "uri": dl.uri(base),
                "compressed": compressed,
                "elementString": dl.element_string(),
                "path": dl.path(),
                "handle": gs1.to_handle(dl, gs1.DEFAULT_ROOT),
            }
            out.print(json.dumps(doc, ensure_ascii=False, indent=2))
        else:
            out.print(compressed)
