"""Producer ids for idempotent producers, and the InitProducerId request.

`ProducerIdAllocator` hands out producer ids from blocks of `BLOCK_SIZE`. Before the first id of
a block is handed out, the end of the block is written to
`DATA/__headwater_meta/producer-id-block` (fsync, rename, directory fsync), so after any
restart or crash the next block starts above every id ever handed out: ids never repeat. A
crash wastes at most the rest of a block.

The file: version int16, CRC-32C uint32 of the rest, next unreserved producer id int64.
"""

from __future__ import annotations

import os
import struct
import threading

import crc32c

from headwater.errors import HeadwaterError
from headwater.log._files import storage_error, write_atomically
from headwater.protocol import messages as m

__all__ = [
    "BLOCK_FILE",
    "BLOCK_SIZE",
    "CorruptProducerIdBlockError",
    "ProducerIdAllocator",
    "ProducerIdsExhaustedError",
    "init_producer_id",
]

BLOCK_FILE = os.path.join("__headwater_meta", "producer-id-block")
BLOCK_SIZE = 1000
PRODUCER_ID_MAX = 2**63 - 1
PRODUCER_EPOCH_MAX = 2**15 - 1  # an int16 on the wire

_VERSION = 1
_HEADER = struct.Struct(">hI")
_NEXT = struct.Struct(">q")

NONE = 0
INVALID_REQUEST = 42
UNSUPPORTED_VERSION = 35


class CorruptProducerIdBlockError(HeadwaterError):
    """The producer id block file is damaged: no id can be handed out safely."""


class ProducerIdsExhaustedError(HeadwaterError):
    """Every producer id (2**63 of them) was handed out."""


class ProducerIdAllocator:
    """Unique producer ids across restarts and crashes; thread-safe."""

    def __init__(self, data_dir: str, *, block_size: int = BLOCK_SIZE) -> None:
        if block_size < 1:
            raise ValueError(f"block_size must be positive, not {block_size}")
        self._path = os.path.join(data_dir, BLOCK_FILE)
        self._block_size = block_size
        self._lock = threading.Lock()
        try:
            os.makedirs(os.path.dirname(self._path), exist_ok=True)
        except OSError as error:
            raise storage_error(error, f"create {os.path.dirname(self._path)}") from error
        stored = self._read()
        # Ids below `stored` may have been handed out before; the current block is empty.
        self._next = stored
        self._block_end = stored

    @property
    def path(self) -> str:
        return self._path

    @property
    def reserved_end(self) -> int:
        """Every id handed out by this or an earlier instance is below this one."""
        return self._block_end

    def _read(self) -> int:
        try:
            with open(self._path, "rb") as file:
                data = file.read()
        except FileNotFoundError:
            return 0
        except OSError as error:
            raise storage_error(error, f"read {self._path}") from error
        if len(data) != _HEADER.size + _NEXT.size:
            raise CorruptProducerIdBlockError(f"{self._path} has {len(data)} bytes")
        version, crc = _HEADER.unpack_from(data, 0)
        body = data[_HEADER.size :]
        if version != _VERSION or crc32c.crc32c(body) != crc:
            raise CorruptProducerIdBlockError(f"{self._path} fails its version or CRC check")
        (next_id,) = _NEXT.unpack(body)
        if next_id < 0:
            raise CorruptProducerIdBlockError(f"{self._path} holds a negative id {next_id}")
        return int(next_id)

    def _reserve_block(self) -> None:
        start = self._block_end
        if start >= PRODUCER_ID_MAX:
            raise ProducerIdsExhaustedError("every producer id was handed out")
        end = min(start + self._block_size, PRODUCER_ID_MAX)
        body = _NEXT.pack(end)
        # Durable before any id of the block is handed out: a crash after this never repeats one.
        write_atomically(self._path, _HEADER.pack(_VERSION, crc32c.crc32c(body)) + body)
        self._next = start
        self._block_end = end

    def allocate(self) -> int:
        """A producer id never handed out before, by this data directory."""
        with self._lock:
            if self._next >= self._block_end:
                self._reserve_block()
            producer_id = self._next
            self._next += 1
            return producer_id

    def was_allocated(self, producer_id: int) -> bool:
        """Whether `producer_id` may have been handed out (it is below every unreserved id)."""
        with self._lock:
            return 0 <= producer_id < self._block_end


def init_producer_id(
    allocator: ProducerIdAllocator, body: m.InitProducerIdRequest, version: int
) -> m.InitProducerIdResponse:
    """Answer InitProducerId for an idempotent (non-transactional) producer.

    * A transactional id is the transaction coordinator's (`broker.txn_handlers`), which
      calls this only without one. Given one anyway, this answers UNSUPPORTED_VERSION (35),
      what Kafka's clients map "the broker lacks transactions" to; an empty transactional id
      is INVALID_REQUEST (42), as in Kafka.
    * No producer id (or v0-2): a new producer id, epoch 0.
    * v3+ with the producer id and epoch the client has (KIP-360 epoch bump): the same id with
      epoch + 1, which fences the old epoch's batches on every partition
      (INVALID_PRODUCER_EPOCH). When the epoch is exhausted, or the id was never handed out
      here, a new id with epoch 0 (Kafka itself always gives an idempotent producer a new id;
      clients accept either).

    Synchronous; reserving a new block (once per `BLOCK_SIZE` ids) fsyncs a small file.
    """
    if body.transactional_id is not None:
        code = INVALID_REQUEST if body.transactional_id == "" else UNSUPPORTED_VERSION
        return m.InitProducerIdResponse(error_code=code, producer_id=-1, producer_epoch=-1)
    if (
        version >= 3
        and body.producer_id >= 0
        and 0 <= body.producer_epoch < PRODUCER_EPOCH_MAX
        and allocator.was_allocated(body.producer_id)
    ):
        return m.InitProducerIdResponse(
            error_code=NONE, producer_id=body.producer_id, producer_epoch=body.producer_epoch + 1
        )
    return m.InitProducerIdResponse(
        error_code=NONE, producer_id=allocator.allocate(), producer_epoch=0
    )
