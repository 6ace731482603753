"""Bounds, each with its unit last in the name and a reason.

Topic-level defaults follow Kafka's names and values unless a comment says why not.
"""

from __future__ import annotations

# --- record batches -----------------------------------------------------------------------

# Kafka's default `max.message.bytes`: 1 MiB of records plus the 12-byte log overhead.
MESSAGE_BYTES_MAX_DEFAULT = 1_048_588
# No batch, whatever a topic says, may exceed this: a length field beyond it is corruption.
BATCH_BYTES_MAX = 64 * 1024 * 1024
# A decompressed batch may not expand past this: it bounds memory against compression bombs.
DECOMPRESSED_BATCH_BYTES_MAX = 256 * 1024 * 1024
# Records in one batch; Kafka's offset delta is an int32, this is the practical bound.
RECORDS_PER_BATCH_MAX = 1_000_000
# Headers per record; bounds the work a hostile record can make us do.
HEADERS_PER_RECORD_MAX = 10_000

# --- segments and indexes -----------------------------------------------------------------

SEGMENT_BYTES_DEFAULT = 1024 * 1024 * 1024  # Kafka's `segment.bytes`
# Kafka's floor for `segment.bytes` is 1 MiB; tests need smaller, so ours is 1 KiB.
SEGMENT_BYTES_MIN = 1024
# A segment's positions are int32 in the offset index.
SEGMENT_BYTES_MAX = 2**31 - 1
SEGMENT_MS_DEFAULT = 7 * 24 * 60 * 60 * 1000  # Kafka's `segment.ms`
INDEX_INTERVAL_BYTES_DEFAULT = 4096  # Kafka's `index.interval.bytes`
# Offsets inside a segment are stored relative to its base as int32.
SEGMENT_RELATIVE_OFFSET_MAX = 2**31 - 1

# --- retention and compaction -------------------------------------------------------------

RETENTION_MS_DEFAULT = 7 * 24 * 60 * 60 * 1000
RETENTION_BYTES_DEFAULT = -1  # unbounded
DELETE_RETENTION_MS_DEFAULT = 24 * 60 * 60 * 1000
MIN_CLEANABLE_DIRTY_RATIO_DEFAULT = 0.5

# --- durability ---------------------------------------------------------------------------

# How often the manager writes its recovery-point checkpoint; Kafka's default is 60 s.
RECOVERY_POINT_CHECKPOINT_INTERVAL_MS = 60_000
# How often background maintenance (time flush, compaction, checkpoints) wakes.
MAINTENANCE_INTERVAL_MS = 1_000
# How often it applies retention.ms and retention.bytes: Kafka's log.retention.check.interval.ms,
# first 30 s after start (Kafka's initial task delay). Records past retention stay readable
# until then, as on Kafka: a replay of old data is not deleted the second it lands.
RETENTION_CHECK_INTERVAL_MS = 300_000
RETENTION_FIRST_CHECK_DELAY_MS = 30_000
# Size of one read while scanning a segment during recovery or a scrub.
SCAN_CHUNK_BYTES = 1024 * 1024

# --- topics -------------------------------------------------------------------------------

TOPIC_NAME_LENGTH_MAX = 249  # Kafka's limit (a file name plus a partition suffix)
PARTITIONS_PER_TOPIC_MAX = 10_000
