"""Files holding secrets are 0600 and directories SkyDeck creates 0700, whatever the umask.

The database (created by :mod:`skydeck_site.sqlite3` just before SQLite would create it with the
umask's mode), its ``-wal``/``-shm`` (SQLite gives them the database file's own mode), the
generated secret key and snapshots (``backups.backup``). A directory that already exists
(``/tmp``, ``$HOME``) is the user's and left as it is; files SkyDeck's user owns are tightened.
SkyDeck does not change the process umask.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

#: What SQLite keeps next to a database file.
SIDECARS = ("-wal", "-shm", "-journal")


def private_dir(path: Path) -> None:
    """Make ``path`` a directory: missing ones (parents too) are created 0700, others untouched."""
    path = Path(path)
    missing = []
    while not path.is_dir():
        missing.append(path)
        if path.parent == path:
            break
        path = path.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=0o700)
        except FileExistsError:
            if not directory.is_dir():
                raise
            continue  # created meanwhile by another process: not ours to change
        os.chmod(directory, 0o700)  # mkdir's mode is masked by the umask


def tighten(path: Path | str) -> None:
    """Drop the group and other bits of a file SkyDeck's user owns (0644 -> 0600, never looser)."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return
    mode = stat.S_IMODE(info.st_mode)
    if info.st_uid == os.geteuid() and mode & 0o077:
        os.chmod(path, mode & 0o700)


def private_file(path: Path | str) -> None:
    """Create ``path`` empty with mode 0600 unless it exists; tighten it if it does."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        tighten(path)
    else:
        os.close(fd)


def private_database(path: Path | str) -> None:
    """A SQLite database file and its sidecars: created 0600 if missing, else tightened."""
    private_file(path)
    for suffix in SIDECARS:
        tighten(f"{path}{suffix}")
