"""One client API, three places to run: embedded, a Headwater broker, an Apache Kafka cluster.

import headwater
with headwater.connect("file:///tmp/data") as client:     # or "kafka://127.0.0.1:9092"
    with client.producer(value_serializer="json") as producer:
        producer.send("readings", {"celsius": 21.5}, key=b"sensor-7").result()
    with client.consumer(group_id="dash", auto_offset_reset="earliest",
                         value_deserializer="json") as consumer:
        consumer.subscribe(["readings"])
        record = consumer.poll(5.0)
"""

from __future__ import annotations

from headwater.client._api import Admin, Client, Consumer, Producer
from headwater.client._async import AsyncAdmin, AsyncConsumer, AsyncProducer
from headwater.client._connect import connect
from headwater.client._serialization import struct
from headwater.client._types import (
    OFFSET_BEGINNING,
    OFFSET_END,
    OFFSET_INVALID,
    ConsumerRecord,
    GroupDescription,
    GroupListing,
    MemberDescription,
    NewTopic,
    PartitionDescription,
    RecordMetadata,
    TopicDescription,
    TopicPartition,
)

__all__ = [
    "OFFSET_BEGINNING",
    "OFFSET_END",
    "OFFSET_INVALID",
    "Admin",
    "AsyncAdmin",
    "AsyncConsumer",
    "AsyncProducer",
    "Client",
    "Consumer",
    "ConsumerRecord",
    "GroupDescription",
    "GroupListing",
    "MemberDescription",
    "NewTopic",
    "PartitionDescription",
    "Producer",
    "RecordMetadata",
    "TopicDescription",
    "TopicPartition",
    "connect",
    "struct",
]
