from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from idr.codec.values import encode_admin
from idr.core.service import NodeService
from idr.model.value import PERM_SECRET, AdminPermission, AdminRecord, HandleValue, ValueReference
from idr.store.sqlite import SqliteStore

ADMIN = ValueReference("0.NA/88.100", 300)
SECRET = b"top-secret"


def admin_values(handle: str = "0.NA/88.100", index: int = 300, secret: bytes = SECRET) -> list[HandleValue]:
    return [
        HandleValue(100, "HS_ADMIN", encode_admin(AdminRecord(handle, index, AdminPermission.ALL))),
        HandleValue(index, "HS_SECKEY", secret, permissions=PERM_SECRET),
    ]


@pytest.fixture
def service(tmp_path: Path) -> Iterator[NodeService]:
    svc = NodeService(SqliteStore(tmp_path / "idr.sqlite3"), admins=[str(ADMIN)])
    svc.bootstrap("88.100", admin_values())
    yield svc
    svc.close()
