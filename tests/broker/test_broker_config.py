"""`BrokerConfig.with_settings`: `headwater serve -c KEY=VALUE`, by Kafka's setting names."""

from __future__ import annotations

import pytest

from headwater import limits
from headwater.broker.config import BrokerConfig
from headwater.errors import ConfigError


def test_settings_by_kafka_names() -> None:
    config = BrokerConfig("data").with_settings(
        {"log.retention.check.interval.ms": "1000", "offsets.retention.minutes": "2"}
    )
    assert config.retention_check_interval_ms == 1000
    assert config.group_coordinator.offsets_retention_ms == 120_000
    assert BrokerConfig("data").retention_check_interval_ms == limits.RETENTION_CHECK_INTERVAL_MS


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"log.retention.check.interval.ms": "0"}, "must be positive"),
        ({"log.retention.check.interval.ms": "soon"}, "must be an integer"),
        ({"log.retention.hours": "1"}, "unknown broker setting 'log.retention.hours'"),
    ],
)
def test_bad_settings_are_refused_by_name(settings: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        BrokerConfig("data").with_settings(settings)
