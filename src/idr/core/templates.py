"""Identifier data templates (标识数据模板): what a registration in an industry must carry.

Templates are data: one TOML file per template version (``battery-cell@1.toml``), the three
built-in ones shipped with idr (``idr/core/builtin_templates``) and a node's own in
``<data>/templates/``, loaded at start and again by :meth:`TemplateRegistry.reload` (SIGHUP);
``/api/federation/templates`` lists them. A version, once published, is never edited: a change
is a new file with the next version, and records keep claiming the version they were checked
against.

A registration *claims* a template with a value at index 1001 (the index SNMS v5 reserves for
the template) of type ``IDR.TEMPLATE`` whose data is ``<template id>@<version>`` (e.g.
``battery-cell@1``) — or, written through the SNMS API, of type ``TEMPLATE`` whose data is
SNMS's ``templateVersion`` (a template's ref, id, or its ``snms_version``). Each template field
is a value whose type is the field name (SNMS's shape: one value per attribute). The core
checks the claimed template on every write — create, add, modify, *remove*, SNMS, import — and
a write that would leave a bad record is refused with ``INVALID_VALUE`` whose message is JSON
listing every failing field and why, so a client can show them all at once. A record that
claims a template cannot drop the claim by a later write (delete the handle instead).

File format (``format = 1``)::

    id = "battery-cell"          # letters, digits, '-', '_', '.'
    version = 1                  # positive integer; the file is <id>@<version>.toml
    name = "Power battery cell"
    industry = "battery"
    snms_version = "1.0"         # optional: the templateVersion SNMS clients send for it
    [[fields]]
    name = "chemistry"           # the value type carrying it
    kind = "enum"                # string, integer, decimal, date, handle, vin, enum
    required = true              # default true
    choices = ["LFP", "NMC"]     # enum only
    minimum = 0.1                # integer/decimal, optional
    maximum = 2000
    min_length = 1               # string, optional (SNMS metadata minLength/maxLength)
    max_length = 64
    description = "…"
"""

from __future__ import annotations

import datetime as dt
import json
import re
import threading
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from idr.model.value import HandleValue

TEMPLATE_INDEX = 1001
TEMPLATE_TYPE = "IDR.TEMPLATE"
SNMS_TEMPLATE_TYPE = "TEMPLATE"  # what the SNMS API writes at index 1001 (its templateVersion)
MAX_FIELD_BYTES = 4096
FILE_FORMAT = 1
KINDS = ("string", "integer", "decimal", "date", "handle", "vin", "enum")
TEMPLATES_DIR = "templates"  # a node's own templates: <data>/templates/*.toml
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class TemplateFileError(ValueError):
    """A template file that cannot be used; the message names the file and why."""


# ISO 3779 / GB 16735: VIN letters exclude I, O, Q; the 9th character is a check digit
# (the North American scheme, which GB 16735 adopts for vehicles sold in China).
_VIN_VALUES = {
    **{str(d): d for d in range(10)},
    **dict(zip("ABCDEFGH", range(1, 9), strict=True)),
    **dict(zip("JKLMN", range(1, 6), strict=True)),
    "P": 7,
    "R": 9,
    **dict(zip("STUVWXYZ", range(2, 10), strict=True)),
}
_VIN_WEIGHTS = (8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2)


def vin_check_digit(vin: str) -> str:
    """The check character (``0``–``9`` or ``X``) for a 17-character VIN."""
    total = sum(_VIN_VALUES[c] * w for c, w in zip(vin.upper(), _VIN_WEIGHTS, strict=True))
    r = total % 11
    return "X" if r == 10 else str(r)


def vin_error(vin: str) -> str | None:
    """Why ``vin`` is not a valid VIN, or None."""
    v = vin.strip().upper()
    if len(v) != 17:
        return f"a VIN has 17 characters, not {len(v)}"
    bad = sorted({c for c in v if c not in _VIN_VALUES})
    if bad:
        return f"character(s) {''.join(bad)!r} not allowed in a VIN (I, O, Q and symbols are excluded)"
    want = vin_check_digit(v)
    if v[8] != want:
        return f"check digit (9th character) is {v[8]!r}, expected {want!r}"
    return None


@dataclass(frozen=True)
class Field:
    """One attribute: its name (the value type carrying it), kind, and whether it must be there.

    Kinds: ``string``, ``integer``, ``decimal``, ``date`` (ISO ``YYYY-MM-DD``), ``handle``
    (a reference ``prefix/suffix``), ``vin``, ``enum`` (one of ``choices``).
    """

    name: str
    kind: str = "string"
    required: bool = True
    description: str = ""
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    min_length: int | None = None
    max_length: int | None = None

    def error(self, text: str) -> str | None:
        """Why ``text`` is not a good value for this field, or None."""
        if not text.strip():
            return "empty"
        if self.min_length is not None and len(text) < self.min_length:
            return f"shorter than {self.min_length} characters"
        if self.max_length is not None and len(text) > self.max_length:
            return f"longer than {self.max_length} characters"
        if self.kind == "integer":
            if not re.fullmatch(r"-?\d{1,18}", text.strip()):
                return f"{text!r} is not an integer"
            return self._range(float(text))
        if self.kind == "decimal":
            try:
                num = float(text)
            except ValueError:
                return f"{text!r} is not a number"
            if num != num or num in (float("inf"), float("-inf")):
                return f"{text!r} is not a finite number"
            return self._range(num)
        if self.kind == "date":
            try:
                dt.date.fromisoformat(text.strip())
            except ValueError:
                return f"{text!r} is not a date YYYY-MM-DD"
            return None
        if self.kind == "handle":
            prefix, sep, suffix = text.strip().partition("/")
            if not (sep and prefix and suffix) or any(not p for p in prefix.split(".")):
                return f"{text!r} is not a handle reference prefix/suffix"
            return None
        if self.kind == "vin":
            return vin_error(text)
        if self.kind == "enum" and text.strip() not in self.choices:
            return f"{text!r} is not one of {', '.join(self.choices)}"
        return None

    def _range(self, num: float) -> str | None:
        if self.minimum is not None and num < self.minimum:
            return f"{num:g} is below the minimum {self.minimum:g}"
        if self.maximum is not None and num > self.maximum:
            return f"{num:g} is above the maximum {self.maximum:g}"
        return None

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {"name": self.name, "kind": self.kind, "required": self.required}
        if self.description:
            out["description"] = self.description
        if self.choices:
            out["choices"] = list(self.choices)
        if self.minimum is not None:
            out["minimum"] = self.minimum
        if self.maximum is not None:
            out["maximum"] = self.maximum
        if self.min_length is not None:
            out["min_length"] = self.min_length
        if self.max_length is not None:
            out["max_length"] = self.max_length
        return out


@dataclass(frozen=True)
class Template:
    id: str
    version: int
    name: str
    industry: str
    fields: tuple[Field, ...]
    snms_version: str = ""
    source: str = ""  # the file it was read from ("builtin:<name>" for idr's own)

    @property
    def ref(self) -> str:
        return f"{self.id}@{self.version}"

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "id": self.id,
            "version": self.version,
            "ref": self.ref,
            "name": self.name,
            "industry": self.industry,
            "claim": {"index": TEMPLATE_INDEX, "type": TEMPLATE_TYPE, "data": self.ref},
            "fields": [f.to_json() for f in self.fields],
            "builtin": self.source.startswith("builtin:"),
        }
        if self.snms_version:
            out["snms_version"] = self.snms_version
        return out


# --------------------------------------------------------------------------- files

_TEMPLATE_KEYS = {"format", "id", "version", "name", "industry", "snms_version", "fields"}
_FIELD_KEYS = {
    "name",
    "kind",
    "required",
    "description",
    "choices",
    "minimum",
    "maximum",
    "min_length",
    "max_length",
}


def parse_template(doc: Mapping[str, Any], source: str) -> Template:
    """A template from a parsed TOML document; TemplateFileError says what is wrong and where."""

    def bad(why: str) -> TemplateFileError:
        return TemplateFileError(f"{source}: {why}")

    unknown = set(doc) - _TEMPLATE_KEYS
    if unknown:
        raise bad(f"unknown key(s) {', '.join(sorted(unknown))}")
    if doc.get("format", FILE_FORMAT) != FILE_FORMAT:
        raise bad(f"format {doc.get('format')!r} is not one this idr reads ({FILE_FORMAT})")
    tid, version = doc.get("id"), doc.get("version")
    if not isinstance(tid, str) or not _ID.match(tid):
        raise bad("id must be letters, digits, '-', '_' or '.' (at most 64)")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise bad("version must be a positive integer")
    texts = {k: doc.get(k, "") for k in ("name", "industry", "snms_version")}
    for k, v in texts.items():
        if not isinstance(v, str):
            raise bad(f"{k} must be a string")
    raw_fields = doc.get("fields", [])
    if not isinstance(raw_fields, list) or not raw_fields:
        raise bad("a template has at least one [[fields]] entry")
    fields: list[Field] = []
    for i, f in enumerate(raw_fields):
        fields.append(_parse_field(f, f"{source}: fields[{i}]"))
    names = [f.name.lower() for f in fields]
    if len(set(names)) != len(names):
        raise bad("two fields with the same name")
    return Template(
        tid, version, texts["name"] or tid, texts["industry"], tuple(fields), texts["snms_version"], source
    )


def _parse_field(f: object, where: str) -> Field:
    def bad(why: str) -> TemplateFileError:
        return TemplateFileError(f"{where}: {why}")

    if not isinstance(f, dict):
        raise bad("must be a table")
    unknown = set(f) - _FIELD_KEYS
    if unknown:
        raise bad(f"unknown key(s) {', '.join(sorted(unknown))}")
    name, kind = f.get("name"), f.get("kind", "string")
    if not isinstance(name, str) or not name or name.upper().startswith("HS_") or len(name) > 128:
        raise bad("name must be a value type (1–128 characters, not HS_…)")
    if name.upper() in (TEMPLATE_TYPE, SNMS_TEMPLATE_TYPE):
        raise bad(f"{name} is the template claim itself")
    if kind not in KINDS:
        raise bad(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
    required = f.get("required", True)
    if not isinstance(required, bool):
        raise bad("required is true or false")
    choices = f.get("choices", [])
    if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
        raise bad("choices is a list of strings")
    if (kind == "enum") != bool(choices):
        raise bad("an enum field lists its choices, and only an enum field has choices")
    numbers: dict[str, float | None] = {}
    for k in ("minimum", "maximum"):
        v = f.get(k)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int | float)):
            raise bad(f"{k} must be a number")
        if v is not None and kind not in ("integer", "decimal"):
            raise bad(f"{k} applies to integer and decimal fields")
        numbers[k] = float(v) if v is not None else None
    lengths: dict[str, int | None] = {}
    for k in ("min_length", "max_length"):
        v = f.get(k)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
            raise bad(f"{k} must be a non-negative integer")
        lengths[k] = v
    description = f.get("description", "")
    if not isinstance(description, str):
        raise bad("description must be a string")
    return Field(
        name,
        kind,
        required,
        description,
        tuple(choices),
        numbers["minimum"],
        numbers["maximum"],
        lengths["min_length"],
        lengths["max_length"],
    )


def read_template(path: Path) -> Template:
    """One template file; its name must be ``<id>@<version>.toml``."""
    try:
        doc = tomllib.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise TemplateFileError(f"{path}: {e}") from e
    t = parse_template(doc, str(path))
    if path.name != f"{t.ref}.toml":
        raise TemplateFileError(f"{path}: a template file is named after its ref: {t.ref}.toml")
    return t


def builtin_templates() -> list[Template]:
    """idr's own templates (package data)."""
    out = []
    for entry in sorted(resources.files("idr.core").joinpath("builtin_templates").iterdir(), key=str):
        if entry.name.endswith(".toml"):
            t = parse_template(tomllib.loads(entry.read_text("utf-8")), f"builtin:{entry.name}")
            out.append(t)
    return out


@dataclass(frozen=True)
class FieldError:
    field: str
    reason: str


@dataclass(frozen=True)
class TemplateErrors:
    """Every failing field of one registration."""

    template: str
    errors: tuple[FieldError, ...]

    def to_json(self) -> dict[str, object]:
        return {
            "template": self.template,
            "errors": [{"field": e.field, "reason": e.reason} for e in self.errors],
        }

    def message(self, handle: str) -> str:
        """The INVALID_VALUE message: JSON, so HTTP and native clients can show each field."""
        return json.dumps({"handle": handle, **self.to_json()}, ensure_ascii=False, separators=(",", ":"))


def claim_of(values: Iterable[HandleValue]) -> str | None:
    """The template a record claims (IDR.TEMPLATE, or the SNMS API's TEMPLATE at 1001), or None."""
    for v in values:
        t = v.type.upper()
        if t == TEMPLATE_TYPE or (t == SNMS_TEMPLATE_TYPE and v.index == TEMPLATE_INDEX):
            return v.data.decode("utf-8", "replace").strip()
    return None


class TemplateRegistry:
    """The templates a node publishes: idr's built-ins and the files in its ``directory``."""

    def __init__(self, templates: Iterable[Template] = (), directory: Path | None = None) -> None:
        self.directory = directory
        self.templates: dict[str, Template] = {}
        self._lock = threading.Lock()
        for t in templates:
            self.add(t)

    @classmethod
    def builtin(cls) -> TemplateRegistry:
        return cls(builtin_templates())

    @classmethod
    def load(cls, data_dir: Path | None) -> TemplateRegistry:
        """The built-ins and ``<data_dir>/templates/*.toml``; TemplateFileError on a bad file."""
        directory = Path(data_dir) / TEMPLATES_DIR if data_dir is not None else None
        return cls(_read_all(directory), directory)

    def reload(self) -> list[str]:
        """Read the files again (a new version, a new template) and swap the set in at once;
        the refs that appeared. A bad file raises TemplateFileError and changes nothing."""
        fresh = TemplateRegistry(_read_all(self.directory))
        with self._lock:
            added = sorted(set(fresh.templates) - set(self.templates))
            self.templates = fresh.templates
        return added

    def add(self, t: Template) -> None:
        """Publish ``t``; the same ref with other content is refused (versions never change)."""
        old = self.templates.get(t.ref)
        if old is not None:
            if (old.name, old.industry, old.fields) != (t.name, t.industry, t.fields):
                raise TemplateFileError(
                    f"{t.source}: {t.ref} is already defined by {old.source}; publish a new version instead"
                )
            return
        self.templates = {**self.templates, t.ref: t}

    def all(self) -> list[Template]:
        return sorted(self.templates.values(), key=lambda t: (t.id, t.version))

    def get(self, ref: str) -> Template | None:
        """By ``id@version``, by ``id`` alone for its newest version, or by an SNMS version."""
        templates = self.templates
        if "@" in ref:
            return templates.get(ref)
        versions = [t for t in templates.values() if t.id == ref]
        if versions:
            return max(versions, key=lambda t: t.version)
        return next((t for t in templates.values() if t.snms_version and t.snms_version == ref), None)

    def check(self, values: Sequence[HandleValue]) -> TemplateErrors | None:
        """Field errors of a registration that claims a template; None if it is fine or claims none."""
        ref = claim_of(values)
        if ref is None:
            return None
        template = self.get(ref)
        if template is None:
            known = ", ".join(sorted(self.templates))
            return TemplateErrors(
                ref, (FieldError(TEMPLATE_TYPE, f"unknown template {ref!r} (known: {known})"),)
            )
        errors = list(_field_errors(template, values))
        return TemplateErrors(template.ref, tuple(errors)) if errors else None

    def check_change(
        self, before: Sequence[HandleValue] | None, after: Sequence[HandleValue] | None
    ) -> TemplateErrors | None:
        """A write that turns record ``before`` into ``after`` (None: absent): the new record must
        satisfy the template it claims, and a record that claimed one must still claim one."""
        if after is None:
            return None  # deleting a handle is always allowed
        errors = self.check(after)
        if errors is not None:
            return errors
        if before is not None and claim_of(after) is None:
            ref = claim_of(before)
            if ref is not None:
                return TemplateErrors(
                    ref,
                    (
                        FieldError(
                            TEMPLATE_TYPE,
                            f"the record claims template {ref}: the claim cannot be removed "
                            "(claim another version, or delete the handle)",
                        ),
                    ),
                )
        return None


def _read_all(directory: Path | None) -> list[Template]:
    """The built-ins, then the node's files in name order."""
    out = builtin_templates()
    if directory is not None and directory.is_dir():
        out += [read_template(path) for path in sorted(directory.glob("*.toml"))]
    return out


def _field_errors(template: Template, values: Iterable[HandleValue]) -> Iterable[FieldError]:
    by_type: dict[str, list[HandleValue]] = {}
    for v in values:
        by_type.setdefault(v.type.lower(), []).append(v)
    for f in template.fields:
        found = by_type.get(f.name.lower(), [])
        if not found:
            if f.required:
                yield FieldError(f.name, "required field is missing")
            continue
        for v in found:
            if len(v.data) > MAX_FIELD_BYTES:
                yield FieldError(f.name, f"longer than {MAX_FIELD_BYTES} bytes")
                continue
            try:
                text = v.data.decode("utf-8")
            except UnicodeDecodeError:
                yield FieldError(f.name, "not UTF-8 text")
                continue
            reason = f.error(text)
            if reason:
                yield FieldError(f.name, reason)
