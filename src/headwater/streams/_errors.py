"""The streams subtree of Headwater's exception tree.

Every error a topology raises on purpose is a `StreamsError`; mistakes found while building or
compiling a topology (a bad window, a duplicate name, inputs that are not co-partitioned) are
also `ConfigError`s, so code that already catches configuration errors catches them too.
"""

from __future__ import annotations

from headwater.errors import ConfigError, HeadwaterError


class StreamsError(HeadwaterError):
    """The root of every error the stream processor raises on purpose."""


class TopologyError(StreamsError, ConfigError):
    """The dataflow cannot be built or compiled as written; the message names the step."""


class CoPartitioningError(TopologyError):
    """Inputs that a join or a shared task reads together have different partition counts;
    the message names every topic and its count."""


class MissingSourceTopicError(StreamsError):
    """A topic the app reads does not exist; the runtime never creates an app's input topics
    (a typo would otherwise wait forever on an empty topic)."""


class InternalTopicError(StreamsError):
    """A repartition or changelog topic exists with a partition count other than the topology
    needs (its tasks would not line up with their state); the message names the topic."""


class StateRestoreError(StreamsError):
    """A store could not be rebuilt from its changelog (the read stalled or the checkpoint is
    unreadable); processing must not start on partial state."""


class UnknownStoreError(StreamsError, KeyError):
    """No store of that name exists in the task or the topology."""

    def __str__(self) -> str:  # KeyError quotes its message; say it plainly instead
        return str(self.args[0]) if self.args else "unknown store"


__all__ = [
    "CoPartitioningError",
    "InternalTopicError",
    "MissingSourceTopicError",
    "StateRestoreError",
    "StreamsError",
    "TopologyError",
    "UnknownStoreError",
]
