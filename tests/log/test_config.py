from __future__ import annotations

import pytest

from headwater.errors import ConfigError
from headwater.log.config import FLUSH_NEVER, TopicConfig


def test_defaults_follow_kafka_except_flush_messages() -> None:
    config = TopicConfig.from_overrides({})
    assert config.segment_bytes == 1024**3
    assert config.retention_ms == 7 * 24 * 3600 * 1000
    assert config.max_message_bytes == 1_048_588
    assert config.cleanup_policy == "delete"
    assert config.flush_messages == 1 and config.flush_every_append
    assert config.flush_ms == FLUSH_NEVER


def test_overrides_are_parsed_and_remembered() -> None:
    config = TopicConfig.from_overrides({"cleanup.policy": "compact", "segment.bytes": " 4096 "})
    assert config.compact and not config.delete
    assert config.segment_bytes == 4096
    assert dict(config.overrides) == {"cleanup.policy": "compact", "segment.bytes": "4096"}
    rows = {name: (value, is_default) for name, value, is_default, _ in config.describe()}
    assert rows["segment.bytes"] == ("4096", False)
    assert rows["retention.ms"] == (str(7 * 24 * 3600 * 1000), True)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("segment.bytes", "12"),
        ("segment.bytes", "lots"),
        ("cleanup.policy", "shred"),
        ("min.cleanable.dirty.ratio", "1.5"),
        ("retention.ms", "-2"),
        ("flush.messages", "0"),
        ("message.timestamp.type", "WallTime"),
    ],
)
def test_invalid_values_name_the_key(key: str, value: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        TopicConfig.from_overrides({key: value})


def test_unknown_key_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"unknown topic config .segment\.size."):
        TopicConfig.from_overrides({"segment.size": "1"})


def test_altered_applies_and_restores_defaults() -> None:
    config = TopicConfig.from_overrides({"retention.ms": "1000"})
    altered = config.altered({"retention.ms": None, "retention.bytes": "500"})
    assert altered.retention_ms == TopicConfig().retention_ms
    assert altered.retention_bytes == 500
    assert config.retention_ms == 1000  # the original is untouched
    with pytest.raises(ConfigError):
        config.altered({"nope": None})
