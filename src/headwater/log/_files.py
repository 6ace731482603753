"""File-system helpers shared by the log engine, with OS errors mapped to Headwater's types."""

from __future__ import annotations

import contextlib
import errno
import os

from headwater.errors import DiskFullError, StorageError


def storage_error(error: OSError, what: str) -> StorageError:
    """Map an operating-system error at the file boundary to Headwater's types."""
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFullError(f"{what}: file system full ({error.strerror})")
    return StorageError(f"{what}: {error.strerror or error}")


def sync_directory(path: str) -> None:
    """fsync a directory so a created, renamed or deleted entry in it survives a crash."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as error:
        raise storage_error(error, f"fsync directory {path}") from error


def write_atomically(path: str, data: bytes) -> None:
    """Write a small file so that a crash leaves either the old or the new contents."""
    temporary = path + ".tmp"
    try:
        with open(temporary, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except OSError as error:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise storage_error(error, f"write {path}") from error
    sync_directory(os.path.dirname(path) or ".")


__all__ = ["storage_error", "sync_directory", "write_atomically"]
