"""pyhandle 1.5.0 (EUDAT's REST client) against a real node: the interop the issue asks for.

Every step is checked twice: through pyhandle, and by reading the SQLite store directly,
so a passing test means the record bytes really changed on disk.
"""

from __future__ import annotations

from typing import Any

import pytest
from pyhandle.handleclient import PyHandleClient
from pyhandle.handleexceptions import HandleAlreadyExistsException, HandleNotFoundException

from idr.codec.values import decode_admin
from idr.model.value import HandleRecord
from tests.server.conftest import ADMIN, SECRET, Node

pytestmark = pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")

HANDLE = "88.100/PyHandle-Test-1"


def _client(node: Node) -> Any:
    # PyHandleClient('rest', credentials) ignores credentials for the REST client in 1.5.0;
    # the documented way is instantiate_with_username_and_password.
    return PyHandleClient("rest").instantiate_with_username_and_password(
        node.https, ADMIN, SECRET, HTTPS_verify=False
    )


def _data(record: HandleRecord | None, type_: str) -> bytes | None:
    assert record is not None
    found = [v.data for v in record.values if v.type == type_]
    return found[0] if found else None


def test_full_lifecycle(node: Node) -> None:
    client = _client(node)

    # register: GET (404) then PUT ?overwrite=false with {"values":[…]} and a string admin index
    assert client.register_handle(HANDLE, "https://example.org/a", checksum="c0ffee") == HANDLE
    rec = node.record(HANDLE)
    assert rec is not None and rec.handle == HANDLE
    assert _data(rec, "URL") == b"https://example.org/a"
    assert _data(rec, "CHECKSUM") == b"c0ffee"
    admin = decode_admin(_data(rec, "HS_ADMIN") or b"")
    assert (admin.handle, admin.index, admin.permissions) == ("0.NA/88.100", 200, 0b011111110011)

    with pytest.raises(HandleAlreadyExistsException):
        client.register_handle(HANDLE, "https://example.org/other")
    assert _data(node.record(HANDLE), "URL") == b"https://example.org/a"

    # reads
    js = client.retrieve_handle_record_json(HANDLE)
    assert js["handle"] == HANDLE and js["responseCode"] == 1
    assert client.retrieve_handle_record(HANDLE)["URL"] == "https://example.org/a"
    assert client.get_value_from_handle(HANDLE, "CHECKSUM") == "c0ffee"
    # lookup is case-insensitive and the echo is exactly what was asked
    assert client.retrieve_handle_record_json(HANDLE.lower())["handle"] == HANDLE.lower()

    # modify an existing value, add new ones
    client.modify_handle_value(HANDLE, URL="https://example.org/b")
    assert _data(node.record(HANDLE), "URL") == b"https://example.org/b"
    client.modify_handle_value(HANDLE, EMAIL="ops@example.org", DESC="battery pack")
    client.add_handle_value(HANDLE, ORIGIN="Yibin")
    rec = node.record(HANDLE)
    assert _data(rec, "EMAIL") == b"ops@example.org"
    assert _data(rec, "DESC") == b"battery pack"
    assert _data(rec, "ORIGIN") == b"Yibin"
    assert client.get_value_from_handle(HANDLE, "EMAIL") == "ops@example.org"

    # delete one value, then the handle
    client.delete_handle_value(HANDLE, "CHECKSUM")
    assert _data(node.record(HANDLE), "CHECKSUM") is None
    assert client.get_value_from_handle(HANDLE, "CHECKSUM") is None
    client.delete_handle(HANDLE)
    assert node.record(HANDLE) is None
    assert client.retrieve_handle_record_json(HANDLE) is None
    with pytest.raises(HandleNotFoundException):
        client.delete_handle(HANDLE)


def test_register_with_overwrite_replaces_record(node: Node) -> None:
    client = _client(node)
    client.register_handle(HANDLE, "https://example.org/a", checksum="1")
    client.register_handle(HANDLE, "https://example.org/z", overwrite=True)
    rec = node.record(HANDLE)
    assert _data(rec, "URL") == b"https://example.org/z"
    assert _data(rec, "CHECKSUM") is None


def test_wrong_password_is_refused(node: Node) -> None:
    from pyhandle.handleexceptions import HandleAuthenticationError

    client = PyHandleClient("rest").instantiate_with_username_and_password(
        node.https, ADMIN, "not-the-key", HTTPS_verify=False
    )
    before = node.snapshot()
    with pytest.raises(HandleAuthenticationError):
        client.register_handle(HANDLE, "https://example.org/a")
    assert node.snapshot() == before
    assert node.record(HANDLE) is None


def test_unknown_username_handle_is_reported(node: Node) -> None:
    with pytest.raises(HandleNotFoundException):
        PyHandleClient("rest").instantiate_with_username_and_password(
            node.https, "300:88.100/nobody", SECRET, HTTPS_verify=False
        )
