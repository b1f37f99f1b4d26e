"""Templates are data: TOML files (idr's built-ins and a node's own), versioned, reloadable,
and enforced by the core on every write — removal of values included — on any node role."""

from __future__ import annotations

from pathlib import Path

import pytest

from idr.codec.values import encode_admin
from idr.core.request import Op, Request
from idr.core.service import NodeService
from idr.core.templates import (
    TEMPLATE_INDEX,
    TEMPLATE_TYPE,
    TemplateFileError,
    TemplateRegistry,
    builtin_templates,
    read_template,
)
from idr.model.errors import ResponseCode
from idr.model.value import AdminPermission, AdminRecord, HandleValue, ValueReference
from idr.store.sqlite import SqliteStore

ADMIN = ValueReference("0.NA/88.100", 300)
CELL = [
    (2, "manufacturer", "Yibin Cells"),
    (3, "model", "LFP-280"),
    (4, "chemistry", "LFP"),
    (5, "capacity_ah", "280"),
    (6, "production_date", "2024-07-18"),
    (7, "batch", "B-1"),
    (TEMPLATE_INDEX, TEMPLATE_TYPE, "battery-cell@1"),
]
SENSOR_V1 = """
format = 1
id = "sensor"
version = 1
name = "Pressure sensor"
industry = "instruments"
[[fields]]
name = "range_kpa"
kind = "integer"
minimum = 1
"""


def values(spec: list[tuple[int, str, str]]) -> tuple[HandleValue, ...]:
    return tuple(HandleValue(i, t, d.encode()) for i, t, d in spec)


@pytest.fixture
def service(tmp_path: Path) -> NodeService:
    """A standalone node (plain NodeService): templates are the core's, not a federation role's."""
    svc = NodeService(
        SqliteStore(tmp_path / "idr.sqlite3"),
        admins=[str(ADMIN)],
        templates=TemplateRegistry.load(tmp_path),
    )
    admin = encode_admin(AdminRecord(ADMIN.handle, 300, AdminPermission.ALL))
    svc.bootstrap("88.100", [HandleValue(100, "HS_ADMIN", admin)])
    return svc


def write(svc: NodeService, op: Op, handle: str, **kw: object) -> tuple[ResponseCode, str]:
    resp = svc.handle(Request(op, handle, identity=ADMIN, **kw))  # type: ignore[arg-type]
    return resp.code, resp.message


def test_builtins_are_package_files() -> None:
    refs = [t.ref for t in builtin_templates()]
    assert refs == ["battery-cell@1", "battery-pack@1", "vehicle@1"]
    cell = TemplateRegistry.builtin().get("battery-cell")
    assert cell is not None and cell.source == "builtin:battery-cell@1.toml"
    chemistry = next(f for f in cell.fields if f.name == "chemistry")
    assert "LFP" in chemistry.choices and chemistry.error("Plutonium")


def test_a_node_adds_versions_and_reload_picks_them_up(tmp_path: Path) -> None:
    tdir = tmp_path / "templates"
    tdir.mkdir()
    (tdir / "sensor@1.toml").write_text(SENSOR_V1)
    reg = TemplateRegistry.load(tmp_path)
    assert reg.get("sensor") is not None and reg.get("sensor@1") is not None
    assert {t.ref for t in reg.all()} >= {"battery-cell@1", "sensor@1"}
    (tdir / "sensor@2.toml").write_text(SENSOR_V1.replace("version = 1", "version = 2") + "max_length = 5\n")
    assert reg.reload() == ["sensor@2"]
    newest = reg.get("sensor")
    assert newest is not None and newest.version == 2
    # A broken file: reload refuses and the published set stays as it was.
    (tdir / "broken@1.toml").write_text("id = 'broken'\nversion = 1\n[[fields]]\nname='x'\nkind='colour'\n")
    with pytest.raises(TemplateFileError, match="kind must be one of"):
        reg.reload()
    assert reg.get("sensor@2") is not None and reg.get("broken") is None


@pytest.mark.parametrize(
    ("name", "text", "why"),
    [
        ("a@1.toml", "id='a'\nversion=1\ncolour='red'\n[[fields]]\nname='x'\n", "unknown key"),
        ("a@1.toml", "id='a'\nversion=0\n[[fields]]\nname='x'\n", "positive integer"),
        ("a@1.toml", "id='a'\nversion=1\n", "at least one"),
        ("a@1.toml", "id='a'\nversion=1\n[[fields]]\nname='x'\nkind='enum'\n", "choices"),
        ("a@1.toml", "id='a'\nversion=1\n[[fields]]\nname='HS_ADMIN'\n", "not HS_"),
        ("a@1.toml", "id='a'\nversion=1\n[[fields]]\nname='x'\nminimum=1\n", "integer and decimal"),
        ("b@1.toml", "id='a'\nversion=1\n[[fields]]\nname='x'\n", "named after its ref"),
        ("a@1.toml", "id='a'\nversion=1\n[[fields]\n", "a@1.toml"),
    ],
)
def test_bad_template_files_are_refused_with_the_reason(
    tmp_path: Path, name: str, text: str, why: str
) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(TemplateFileError, match=why):
        read_template(path)


def test_a_version_cannot_be_redefined(tmp_path: Path) -> None:
    tdir = tmp_path / "templates"
    tdir.mkdir()
    (tdir / "battery-cell@1.toml").write_text(SENSOR_V1.replace('"sensor"', '"battery-cell"'))
    with pytest.raises(TemplateFileError, match="publish a new version"):
        TemplateRegistry.load(tmp_path)


def test_every_write_path_keeps_a_record_valid(service: NodeService) -> None:
    h = "88.100/cell-1"
    bad = [*CELL[:2], (4, "chemistry", "Plutonium"), *CELL[3:]]
    code, message = write(service, Op.CREATE_HANDLE, h, values=values(bad))
    assert code == ResponseCode.INVALID_VALUE and '"field":"chemistry"' in message
    assert write(service, Op.CREATE_HANDLE, h, values=values(CELL))[0] == ResponseCode.SUCCESS
    # add / modify a value into something the template refuses
    code, _ = write(service, Op.MODIFY_VALUE, h, values=values([(5, "capacity_ah", "-1")]))
    assert code == ResponseCode.INVALID_VALUE
    code, _ = write(service, Op.ADD_VALUE, h, values=values([(8, "chemistry", "Plutonium")]))
    assert code == ResponseCode.INVALID_VALUE
    # removing a required value, or the claim itself, would leave an invalid record
    code, message = write(service, Op.REMOVE_VALUE, h, indexes=(4,))
    assert code == ResponseCode.INVALID_VALUE and "required field is missing" in message
    code, message = write(service, Op.REMOVE_VALUE, h, indexes=(TEMPLATE_INDEX,))
    assert code == ResponseCode.INVALID_VALUE and "cannot be removed" in message
    # replacing the record without the claim is the same escape
    code, _ = write(service, Op.CREATE_HANDLE, h, values=values(CELL[:-1]), overwrite=True)
    assert code == ResponseCode.INVALID_VALUE
    record = service.store.get(h.upper())
    assert record is not None and len(record.values) == len(CELL) + 1  # untouched (+ the default admin)
    # what is allowed: an optional-free valid change, a removal of a non-template value, a delete
    assert write(service, Op.ADD_VALUE, h, values=values([(9, "DESC", "spare")]))[0] == ResponseCode.SUCCESS
    assert write(service, Op.REMOVE_VALUE, h, indexes=(9,))[0] == ResponseCode.SUCCESS
    assert write(service, Op.DELETE_HANDLE, h)[0] == ResponseCode.SUCCESS


def test_import_checks_templates(service: NodeService) -> None:
    from idr.core.importer import parse_line

    claim = b'{"index": 1001, "type": "IDR.TEMPLATE", "data": "battery-cell@1"}'
    line = b'{"handle": "88.100/c", "values": [' + claim + b"]}"
    with pytest.raises(ValueError, match="required field is missing"):
        parse_line(service, line)
