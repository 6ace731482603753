"""Headwater's one exception tree.

Every expected failure is a subclass of `HeadwaterError`. Errors a Kafka client could see carry
the Kafka protocol error code (`error_code`), so the broker maps them without a lookup table and
the embedded backend raises the same types the network backends do.
"""

from __future__ import annotations


class HeadwaterError(Exception):
    """The root of every error Headwater raises on purpose."""

    error_code: int = -1  # UNKNOWN_SERVER_ERROR
    retriable: bool = False


class ClientError(HeadwaterError):
    """An error a client can be given: every backend (embedded, Kafka) raises these types for
    the same situation, so application code catches one type whichever runs it.

    Typed subclasses carry Kafka's code as a class attribute; a bare `ClientError` carries the
    code it was given (-1 when Kafka has none for it).
    """

    def __init__(
        self, message: str = "", *, error_code: int | None = None, retriable: bool | None = None
    ) -> None:
        super().__init__(message)
        if error_code is not None:
            self.error_code = error_code
        if retriable is not None:
            self.retriable = retriable


class InvariantViolation(HeadwaterError):
    """Something that must always hold did not: a bug, never bad input."""


# --- configuration and usage -------------------------------------------------------------


class ConfigError(ClientError):
    """A configuration key is unknown or its value is invalid."""

    error_code = 40  # INVALID_CONFIG


class DataDirectoryLockedError(HeadwaterError):
    """Another process holds the data directory."""


# --- topics and partitions ---------------------------------------------------------------


class TopicError(ClientError):
    """A base for errors about a topic as a whole."""


class UnknownTopicOrPartitionError(TopicError):
    """The topic or partition does not exist."""

    error_code = 3
    retriable = True


class TopicAlreadyExistsError(TopicError):
    error_code = 36


class InvalidTopicError(TopicError):
    """The topic name is not a legal Kafka topic name."""

    error_code = 17


class InvalidPartitionsError(TopicError):
    error_code = 37


# --- records and offsets ------------------------------------------------------------------


class RecordError(ClientError):
    """A base for errors about records and batches."""


class CorruptRecordError(RecordError):
    """A batch failed its CRC or structural checks; it is never served."""

    error_code = 2  # CORRUPT_MESSAGE
    retriable = True


class InvalidRecordError(RecordError):
    """A batch is well formed but not acceptable (bad magic, bad offsets, missing key)."""

    error_code = 87  # INVALID_RECORD


class UnsupportedCompressionError(RecordError):
    error_code = 76  # UNSUPPORTED_COMPRESSION_TYPE


class RecordBatchTooLargeError(RecordError):
    """A batch is larger than the topic's `max.message.bytes`."""

    error_code = 10  # MESSAGE_TOO_LARGE


class OffsetOutOfRangeError(RecordError):
    """The requested offset is below the log start or above the log end."""

    error_code = 1


# --- storage ------------------------------------------------------------------------------


class StorageError(ClientError):
    """The disk failed under us: full, read-only, or an I/O error."""

    error_code = 56  # KAFKA_STORAGE_ERROR
    retriable = True


class DiskFullError(StorageError):
    """The file system is full (ENOSPC); nothing acknowledged was lost."""


class LogClosedError(StorageError):
    """The log was closed, or went offline after a storage failure."""


# --- clients ------------------------------------------------------------------------------


class ClientClosedError(ClientError):
    """The producer, consumer, admin client or connection was already closed."""


class KafkaTimeoutError(ClientError):
    """An operation did not finish within its timeout (Kafka's REQUEST_TIMED_OUT)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, error_code=7, retriable=True)


class SerializationError(ClientError):
    """A key or value could not be serialized; names the topic."""


class DeserializationError(ClientError):
    """A record's key or value could not be deserialized; names where it is in the log, so a
    consumer can skip it (seek past `offset`) instead of dying."""

    def __init__(self, message: str, *, topic: str, partition: int, offset: int) -> None:
        super().__init__(f"{topic}/{partition} at offset {offset}: {message}")
        self.topic = topic
        self.partition = partition
        self.offset = offset


__all__ = [
    "ClientClosedError",
    "ClientError",
    "ConfigError",
    "CorruptRecordError",
    "DataDirectoryLockedError",
    "DeserializationError",
    "DiskFullError",
    "HeadwaterError",
    "InvalidPartitionsError",
    "InvalidRecordError",
    "InvalidTopicError",
    "InvariantViolation",
    "KafkaTimeoutError",
    "LogClosedError",
    "OffsetOutOfRangeError",
    "RecordBatchTooLargeError",
    "RecordError",
    "SerializationError",
    "StorageError",
    "TopicAlreadyExistsError",
    "TopicError",
    "UnknownTopicOrPartitionError",
    "UnsupportedCompressionError",
]
