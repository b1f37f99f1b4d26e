"""A node's data directory holds secrets — HS_SECKEY values in the store, the replication key in
idr.toml, the filing secret in federation.toml, TLS and session private keys — so it and all in
it are the node user's alone: the directory 0700, files 0600. Files are created that way (never
readable by others for an instant), and ``tighten`` brings a directory made before up to it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


def make_private_dir(path: Path) -> None:
    """``path`` (and missing parents) as a directory only its owner may enter."""
    path.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    os.chmod(path, DIR_MODE)


def create_private(path: Path) -> None:
    """Create ``path`` empty with mode 0600 unless it exists (then ``tighten`` is its business),
    before anything secret is written to it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        return
    try:
        os.fchmod(fd, FILE_MODE)  # the mode given to O_CREAT is masked by the umask
    finally:
        os.close(fd)


def write_private(path: Path, data: bytes) -> None:
    """Replace ``path`` atomically with ``data``, mode 0600 from the first byte."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    tmp.replace(path)


def tighten(data_dir: Path) -> list[Path]:
    """Directories 0700 and files 0600 throughout ``data_dir`` (symbolic links are left alone);
    returns what was more open than that."""
    loosened: list[Path] = []
    todo = [data_dir]
    while todo:
        here = todo.pop()
        st = here.lstat()
        if stat.S_ISLNK(st.st_mode):
            continue
        want = DIR_MODE if stat.S_ISDIR(st.st_mode) else FILE_MODE
        if stat.S_IMODE(st.st_mode) & ~want:
            os.chmod(here, stat.S_IMODE(st.st_mode) & want)
            loosened.append(here)
        if stat.S_ISDIR(st.st_mode):
            todo.extend(here.iterdir())
    return loosened
