"""Zero-copy fetch responses: record bytes go from the segment file to the socket by `sendfile`.

A fetch handler puts a `FileRegion` where the record bytes go; the encoder keeps it by reference
(it is larger than the writer's copy threshold), and the connection sends it with
`os.sendfile` when everything before it has reached the socket. When the socket cannot take it
all at once, the rest is read and queued like any other bytes, so order is always kept.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

# Below this, a pread and a copy cost less than the extra system calls.
ZERO_COPY_BYTES_MIN = 64 * 1024


class FileRegion:
    """`size` bytes at `position` of the open file `fd` (a segment, kept open by the log)."""

    __slots__ = ("fd", "position", "size")

    def __init__(self, fd: int, position: int, size: int) -> None:
        self.fd = fd
        self.position = position
        self.size = size

    def __len__(self) -> int:
        return self.size

    def read(self, skip: int = 0) -> bytes:
        return os.pread(self.fd, self.size - skip, self.position + skip)


def send_chunks(transport: Any, chunks: Sequence[Any]) -> int:
    """Write `chunks` to an asyncio transport in order; returns the bytes sent by sendfile."""
    pending: list[Any] = []
    zero_copied = 0
    for chunk in chunks:
        if not isinstance(chunk, FileRegion):
            pending.append(chunk)
            continue
        if pending:
            transport.writelines(pending)
            pending = []
        sent = 0
        socket = transport.get_extra_info("socket")
        if socket is not None and transport.get_write_buffer_size() == 0:
            # Nothing queued in the transport: the socket is ours to write to directly.
            try:
                while sent < chunk.size:
                    count = os.sendfile(
                        socket.fileno(), chunk.fd, chunk.position + sent, chunk.size - sent
                    )
                    if count == 0:
                        break
                    sent += count
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                pass  # the transport reports a broken connection on its own write below
        zero_copied += sent
        if sent < chunk.size:
            transport.write(chunk.read(sent))
    if pending:
        transport.writelines(pending)
    return zero_copied


__all__ = ["ZERO_COPY_BYTES_MIN", "FileRegion", "send_chunks"]
