"""Request handlers: Kafka's APIs over the log engine.

Each handler takes a decoded request and returns the response body (and the version to encode
it in); none touches a socket. Errors a client can cause become Kafka error codes in the
response, never exceptions out of the broker. Owned by the event loop thread; log appends run
inline (page-cache writes), fsyncs for acks=all run on a worker thread so the loop never blocks
on the disk.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

from headwater.broker.config import BrokerConfig
from headwater.broker.group_handlers import GroupHandlers
from headwater.broker.producer_ids import ProducerIdAllocator
from headwater.broker.txn_handlers import TransactionHandlers
from headwater.broker.zero_copy import ZERO_COPY_BYTES_MIN, FileRegion
from headwater.coordinator.store import INTERNAL_TOPICS
from headwater.errors import (
    ConfigError,
    HeadwaterError,
    InvalidPartitionsError,
    OffsetOutOfRangeError,
    UnknownTopicOrPartitionError,
)
from headwater.log.config import TopicConfig
from headwater.log.manager import LogManager, validate_topic_name
from headwater.log.partition_log import READ_COMMITTED, READ_UNCOMMITTED, PartitionLog
from headwater.protocol import messages as m
from headwater.protocol.connection import Request

_log = logging.getLogger(__name__)

NONE = 0
UNKNOWN_SERVER_ERROR = -1
OFFSET_OUT_OF_RANGE = 1
UNKNOWN_TOPIC_OR_PARTITION = 3
INVALID_REQUIRED_ACKS = 21
INVALID_REQUEST = 42
UNSUPPORTED_VERSION = 35
INVALID_REPLICATION_FACTOR = 38
INVALID_CONFIG = 40
TOPIC_AUTHORIZATION_FAILED = 29
UNKNOWN_TOPIC_ID = 100
INVALID_TOPIC_EXCEPTION = 17

EARLIEST_TIMESTAMP = -2
LATEST_TIMESTAMP = -1
MAX_TIMESTAMP = -3
LEADER_EPOCH = 0  # one node, never re-elected
TOPIC_RESOURCE = 2
BROKER_RESOURCE = 4
# Kafka's config sources for DescribeConfigs.
DYNAMIC_TOPIC_CONFIG = 1
DEFAULT_CONFIG = 5

# The versions this broker advertises: ranges librdkafka 2.x, kafka-python, aiokafka and the
# Java client all negotiate (documented in the README).
SUPPORTED_VERSIONS: dict[int, tuple[int, int]] = {
    0: (3, 9),  # Produce
    1: (4, 12),  # Fetch (v13+ addresses topics by id only)
    2: (1, 7),  # ListOffsets
    3: (0, 12),  # Metadata
    18: (0, 3),  # ApiVersions
    19: (2, 7),  # CreateTopics
    20: (1, 6),  # DeleteTopics
    21: (0, 2),  # DeleteRecords
    32: (1, 4),  # DescribeConfigs
    33: (0, 2),  # AlterConfigs
    37: (0, 3),  # CreatePartitions
    44: (0, 1),  # IncrementalAlterConfigs
    60: (0, 1),  # DescribeCluster
}

Reply = tuple[Any, int] | None


def _error_code(error: Exception) -> int:
    return error.error_code if isinstance(error, HeadwaterError) else UNKNOWN_SERVER_ERROR


class Handlers:
    """The broker's API implementations over one `LogManager`."""

    def __init__(self, config: BrokerConfig, manager: LogManager) -> None:
        self.config = config
        self.manager = manager
        self.supported_versions = SUPPORTED_VERSIONS
        self.advertised_port = config.advertised[1]
        self._data_arrived = asyncio.Event()
        self._pending_flushes: set[asyncio.Future[None]] = set()
        self._table: dict[int, Callable[[Request], Awaitable[Reply]]] = {
            0: self.produce,
            1: self.fetch,
            2: self.list_offsets,
            3: self.metadata,
            18: self.api_versions,
            19: self.create_topics,
            20: self.delete_topics,
            21: self.delete_records,
            32: self.describe_configs,
            33: self.alter_configs,
            37: self.create_partitions,
            44: self.incremental_alter_configs,
            60: self.describe_cluster,
        }
        self.producer_ids = ProducerIdAllocator(config.data_dir)
        # Consumer groups and committed offsets: a plain state machine behind async glue.
        self.groups = GroupHandlers(config, manager, port=lambda: self.advertised_port)
        self._table.update(self.groups.table)
        # Transactions: their coordinator, markers, and InitProducerId for every producer.
        self.transactions = TransactionHandlers(
            config, manager, self.producer_ids, self.groups, data_arrived=self._wake_fetchers
        )
        self._table.update(self.transactions.table)
        self.supported_versions = {
            **SUPPORTED_VERSIONS,
            **self.groups.supported_versions,
            **self.transactions.supported_versions,
        }

    async def start(self) -> None:
        """Start the clocks that must run before any request: a restart may have found
        transactions half-ended, whose markers are still to write."""
        await self.transactions.start()

    async def handle(self, request: Request) -> Reply:
        if request.body is None:  # only ApiVersions gets here unsupported
            return self._api_versions_response(UNSUPPORTED_VERSION), 0
        return await self._table[request.api_key](request)

    async def close(self) -> None:
        await self.transactions.close()
        await self.groups.close()
        if self._pending_flushes:
            await asyncio.gather(*self._pending_flushes, return_exceptions=True)

    def _partition(self, topic: str, partition: int) -> PartitionLog:
        return self.manager.partition(topic, partition)

    # --- ApiVersions, Metadata, DescribeCluster -----------------------------------------------

    def _api_versions_response(self, error_code: int) -> m.ApiVersionsResponse:
        return m.ApiVersionsResponse(
            error_code=error_code,
            api_keys=[
                m.ApiVersionsResponseApiVersion(api_key=key, min_version=low, max_version=high)
                for key, (low, high) in sorted(self.supported_versions.items())
            ],
        )

    async def api_versions(self, request: Request) -> Reply:
        return self._api_versions_response(NONE), request.api_version

    def _brokers(self) -> tuple[int, str, int]:
        host, _ = self.config.advertised
        return self.config.node_id, host, self.advertised_port

    async def metadata(self, request: Request) -> Reply:
        body: m.MetadataRequest = request.body
        node_id, host, port = self._brokers()
        wanted: list[str] | None
        if body.topics is None or (request.api_version == 0 and not body.topics):
            wanted = None
        else:
            wanted = []
            by_id = {info.topic_id: info.name for info in self.manager.topics()}
            for topic in body.topics:
                if topic.name is not None:
                    wanted.append(topic.name)
                elif topic.topic_id in by_id:
                    wanted.append(by_id[topic.topic_id])
        topics = []
        names = [info.name for info in self.manager.topics()] if wanted is None else wanted
        auto_create = self.config.auto_create_topics and (
            request.api_version < 4 or body.allow_auto_topic_creation
        )
        for name in names:
            topics.append(self._topic_metadata(name, auto_create and wanted is not None))
        response = m.MetadataResponse(
            brokers=[
                m.MetadataResponseMetadataResponseBroker(node_id=node_id, host=host, port=port)
            ],
            cluster_id=self.config.cluster_id,
            controller_id=node_id,
            topics=topics,
        )
        return response, request.api_version

    def _topic_metadata(
        self, name: str, auto_create: bool
    ) -> m.MetadataResponseMetadataResponseTopic:
        node_id = self.config.node_id
        try:
            if not self.manager.has_topic(name) and auto_create:
                self.manager.create_topic(name, self.config.default_partitions)
            info = self.manager.topic(name)
        except HeadwaterError as error:
            return m.MetadataResponseMetadataResponseTopic(error_code=_error_code(error), name=name)
        return m.MetadataResponseMetadataResponseTopic(
            error_code=NONE,
            name=name,
            topic_id=info.topic_id,
            is_internal=name in INTERNAL_TOPICS,
            partitions=[
                m.MetadataResponseMetadataResponsePartition(
                    error_code=NONE,
                    partition_index=index,
                    leader_id=node_id,
                    leader_epoch=LEADER_EPOCH,
                    replica_nodes=[node_id],
                    isr_nodes=[node_id],
                    offline_replicas=[],
                )
                for index in range(info.partition_count)
            ],
        )

    async def describe_cluster(self, request: Request) -> Reply:
        node_id, host, port = self._brokers()
        response = m.DescribeClusterResponse(
            cluster_id=self.config.cluster_id,
            controller_id=node_id,
            brokers=[
                m.DescribeClusterResponseDescribeClusterBroker(
                    broker_id=node_id, host=host, port=port
                )
            ],
        )
        return response, request.api_version

    # --- Produce ----------------------------------------------------------------------------

    async def produce(self, request: Request) -> Reply:
        body: m.ProduceRequest = request.body
        acks = body.acks
        results: list[m.ProduceResponseTopicProduceResponse] = []
        durable_waits: list[Awaitable[None]] = []
        loop = asyncio.get_running_loop()
        appended = False
        for topic in body.topic_data:
            partitions = []
            for data in topic.partition_data:
                # Kafka answers -1 for the offsets of a partition it did not append to.
                result = m.ProduceResponsePartitionProduceResponse(
                    index=data.index, base_offset=-1, log_start_offset=-1
                )
                partitions.append(result)
                if acks not in (-1, 0, 1):
                    result.error_code = INVALID_REQUIRED_ACKS
                    continue
                try:
                    log = self._partition(topic.name, data.index)
                    if data.records is None or len(data.records) == 0:
                        raise HeadwaterError("empty record set")
                    if topic.name in INTERNAL_TOPICS:
                        # A client's record there could stop the coordinators from loading.
                        result.error_code = INVALID_TOPIC_EXCEPTION
                        result.error_message = f"cannot append to internal topic {topic.name}"
                        continue
                    refused, message = self.transactions.verify_produce(
                        body.transactional_id, log, data.records
                    )
                    if refused:
                        result.error_code = refused
                        result.error_message = message
                        continue
                    outcome = log.append(data.records, wait_for_flush=False)
                except HeadwaterError as error:
                    result.error_code = _error_code(error)
                    result.error_message = str(error)
                    if isinstance(error, UnknownTopicOrPartitionError):
                        result.error_message = None
                    continue
                appended = True
                result.base_offset = outcome.base_offset
                result.log_append_time_ms = outcome.log_append_time_ms
                result.log_start_offset = outcome.log_start_offset
                if outcome.flush_due:
                    future = loop.run_in_executor(None, log.flush, outcome.last_offset + 1)
                    if acks == -1:
                        durable_waits.append(future)
                    else:
                        self._pending_flushes.add(future)
                        future.add_done_callback(self._flush_done)
            results.append(
                m.ProduceResponseTopicProduceResponse(
                    name=topic.name, partition_responses=partitions
                )
            )
        if durable_waits:
            outcomes = await asyncio.gather(*durable_waits, return_exceptions=True)
            if any(isinstance(outcome, Exception) for outcome in outcomes):
                for topic_result in results:
                    for partition_result in topic_result.partition_responses:
                        if partition_result.error_code == NONE:
                            partition_result.error_code = 56  # KAFKA_STORAGE_ERROR
        if appended:
            self._wake_fetchers()
        if acks == 0:
            return None
        return m.ProduceResponse(responses=results), request.api_version

    def _flush_done(self, future: asyncio.Future[None]) -> None:
        self._pending_flushes.discard(future)
        if not future.cancelled() and future.exception() is not None:
            _log.error("background flush failed: %s", future.exception())
        self._wake_fetchers()  # newly synced records raise the high watermark

    def _wake_fetchers(self) -> None:
        self._data_arrived.set()
        self._data_arrived = asyncio.Event()

    # --- Fetch ------------------------------------------------------------------------------

    async def fetch(self, request: Request) -> Reply:
        body: m.FetchRequest = request.body
        deadline = time.monotonic() + max(0, body.max_wait_ms) / 1000
        while True:
            waiter = self._data_arrived
            response, total = self._read_fetch(body, request.api_version)
            remaining = deadline - time.monotonic()
            if total >= max(1, body.min_bytes) or remaining <= 0 or response.error_code:
                return response, request.api_version
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(waiter.wait(), remaining)

    def _read_fetch(self, body: m.FetchRequest, version: int) -> tuple[m.FetchResponse, int]:
        if body.session_id != 0 or body.session_epoch not in (-1, 0):
            # Fetch sessions are declined: session id 0 in every answer tells the client to
            # send full requests, so an incremental one can only come from a confused client.
            return m.FetchResponse(error_code=70, session_id=0), 0  # FETCH_SESSION_ID_NOT_FOUND
        budget = body.max_bytes if body.max_bytes > 0 else 2**31 - 1
        isolation_level = READ_COMMITTED if body.isolation_level == 1 else READ_UNCOMMITTED
        total = 0
        responses = []
        for topic in body.topics:
            partitions = []
            for wanted in topic.partitions:
                data = m.FetchResponsePartitionData(partition_index=wanted.partition)
                partitions.append(data)
                try:
                    log = self._partition(topic.topic, wanted.partition)
                    # The first batch always comes whole, as in Kafka (KIP-74).
                    limit = (
                        min(wanted.partition_max_bytes, budget)
                        if total
                        else wanted.partition_max_bytes
                    )
                    result = log.read(
                        wanted.fetch_offset,
                        max(limit, 1) if budget > 0 or not total else 0,
                        isolation_level=isolation_level,
                    )
                except OffsetOutOfRangeError:
                    data.error_code = OFFSET_OUT_OF_RANGE
                    data.high_watermark = log.high_watermark
                    data.last_stable_offset = log.last_stable_offset
                    data.log_start_offset = log.log_start_offset
                    data.records = b""
                    continue
                except HeadwaterError as error:
                    data.error_code = _error_code(error)
                    data.records = b""
                    continue
                records: bytes | FileRegion = b""
                if (budget > 0 or total == 0) and result.segment is not None and result.size:
                    if result.size >= ZERO_COPY_BYTES_MIN:
                        records = FileRegion(result.segment.fileno, result.position, result.size)
                    else:
                        records = result.read_bytes()
                total += len(records)
                budget -= len(records)
                data.high_watermark = result.high_watermark
                data.last_stable_offset = result.last_stable_offset
                data.log_start_offset = result.log_start_offset
                if isolation_level == READ_COMMITTED:
                    data.aborted_transactions = [
                        m.FetchResponseAbortedTransaction(
                            producer_id=aborted.producer_id, first_offset=aborted.first_offset
                        )
                        for aborted in result.aborted_transactions
                    ]
                else:
                    data.aborted_transactions = None
                # A FileRegion stands in for the bytes: the connection sends it by sendfile.
                data.records = cast(bytes, records)
            responses.append(
                m.FetchResponseFetchableTopicResponse(topic=topic.topic, partitions=partitions)
            )
        return m.FetchResponse(session_id=0, responses=responses), total

    # --- ListOffsets ------------------------------------------------------------------------

    async def list_offsets(self, request: Request) -> Reply:
        body: m.ListOffsetsRequest = request.body
        topics = []
        for topic in body.topics:
            partitions = []
            for wanted in topic.partitions:
                answer = m.ListOffsetsResponseListOffsetsPartitionResponse(
                    partition_index=wanted.partition_index, timestamp=-1, offset=-1
                )
                partitions.append(answer)
                try:
                    log = self._partition(topic.name, wanted.partition_index)
                except HeadwaterError as error:
                    answer.error_code = _error_code(error)
                    continue
                if request.api_version >= 4:  # the field exists from v4 on
                    answer.leader_epoch = LEADER_EPOCH
                if wanted.timestamp == LATEST_TIMESTAMP:
                    # Read committed sees the end as the last stable offset, as in Kafka.
                    answer.offset = (
                        log.last_stable_offset
                        if body.isolation_level == READ_COMMITTED
                        else log.high_watermark
                    )
                elif wanted.timestamp == EARLIEST_TIMESTAMP:
                    answer.offset = log.log_start_offset
                elif wanted.timestamp == MAX_TIMESTAMP:
                    found = log.max_timestamp()
                    if found is not None:
                        answer.offset, answer.timestamp = found
                elif wanted.timestamp < 0:
                    answer.error_code = INVALID_REQUEST
                else:
                    found = log.offset_for_timestamp(wanted.timestamp)
                    if found is not None:
                        answer.offset, answer.timestamp = found
                if (
                    body.isolation_level == READ_COMMITTED
                    and wanted.timestamp not in (LATEST_TIMESTAMP, EARLIEST_TIMESTAMP)
                    and answer.offset >= log.last_stable_offset
                ):
                    # Not yet stable: read committed finds nothing there, as in Kafka.
                    answer.offset, answer.timestamp = -1, -1
            topics.append(
                m.ListOffsetsResponseListOffsetsTopicResponse(
                    name=topic.name, partitions=partitions
                )
            )
        return m.ListOffsetsResponse(topics=topics), request.api_version

    # --- topics -----------------------------------------------------------------------------

    async def create_topics(self, request: Request) -> Reply:
        body: m.CreateTopicsRequest = request.body
        results = []
        counts = collections.Counter(topic.name for topic in body.topics)
        answered: set[str] = set()
        for topic in body.topics:
            if topic.name in answered:
                continue  # the response holds one entry per name (a map, as Kafka sends it)
            answered.add(topic.name)
            result = m.CreateTopicsResponseCreatableTopicResult(name=topic.name)
            results.append(result)
            if counts[topic.name] > 1:
                result.error_code = INVALID_REQUEST
                result.error_message = "Duplicate topic name."
                continue
            partitions = (
                topic.num_partitions
                if topic.num_partitions != -1
                else self.config.default_partitions
            )
            configs = {
                config.name: config.value for config in topic.configs if config.value is not None
            }
            if topic.replication_factor not in (-1, 1) or topic.assignments:
                result.error_code = INVALID_REPLICATION_FACTOR
                result.error_message = "Headwater is a single node: replication factor must be 1"
                continue
            try:
                if body.validate_only:
                    validate_topic_name(topic.name)
                    TopicConfig.from_overrides(configs)
                    if partitions < 1:
                        raise InvalidPartitionsError(
                            f"partition count {partitions} is not positive"
                        )
                    if self.manager.has_topic(topic.name):
                        self.manager.create_topic(topic.name, partitions, configs)  # raises
                else:
                    info = self.manager.create_topic(topic.name, partitions, configs)
                    result.topic_id = info.topic_id
            except HeadwaterError as error:
                result.error_code = _error_code(error)
                result.error_message = str(error)
                continue
            result.num_partitions = partitions
            result.replication_factor = 1
        return m.CreateTopicsResponse(topics=results), request.api_version

    async def delete_topics(self, request: Request) -> Reply:
        body: m.DeleteTopicsRequest = request.body
        by_id = {info.topic_id: info.name for info in self.manager.topics()}
        wanted: list[tuple[str | None, Any]] = [(name, None) for name in body.topic_names]
        wanted += [(state.name, state.topic_id) for state in body.topics]
        results = []
        for name, topic_id in wanted:
            result = m.DeleteTopicsResponseDeletableTopicResult(name=name)
            results.append(result)
            if name is None:
                name = by_id.get(topic_id)
                result.name = name
                if name is None:
                    result.error_code = UNKNOWN_TOPIC_ID
                    continue
            try:
                info = self.manager.topic(name)
                result.topic_id = info.topic_id
                self.manager.delete_topic(name)
            except HeadwaterError as error:
                result.error_code = _error_code(error)
                result.error_message = str(error)
        return m.DeleteTopicsResponse(responses=results), request.api_version

    async def create_partitions(self, request: Request) -> Reply:
        body: m.CreatePartitionsRequest = request.body
        results = []
        for topic in body.topics:
            result = m.CreatePartitionsResponseCreatePartitionsTopicResult(name=topic.name)
            results.append(result)
            try:
                if topic.assignments:
                    raise HeadwaterError("replica assignments are not supported on a single node")
                if body.validate_only:
                    current = self.manager.topic(topic.name).partition_count
                    if topic.count <= current:
                        raise InvalidPartitionsError(
                            f"topic {topic.name!r} has {current} partitions; cannot go to {topic.count}"
                        )
                else:
                    self.manager.create_partitions(topic.name, topic.count)
            except HeadwaterError as error:
                result.error_code = (
                    _error_code(error) if error.error_code != -1 else INVALID_REQUEST
                )
                result.error_message = str(error)
        return m.CreatePartitionsResponse(results=results), request.api_version

    async def delete_records(self, request: Request) -> Reply:
        body: m.DeleteRecordsRequest = request.body
        topics = []
        for topic in body.topics:
            partitions = []
            for wanted in topic.partitions:
                result = m.DeleteRecordsResponseDeleteRecordsPartitionResult(
                    partition_index=wanted.partition_index, low_watermark=-1
                )
                partitions.append(result)
                try:
                    log = self._partition(topic.name, wanted.partition_index)
                    offset = log.high_watermark if wanted.offset == -1 else wanted.offset
                    result.low_watermark = log.delete_records(offset)
                except HeadwaterError as error:
                    result.error_code = _error_code(error)
            topics.append(
                m.DeleteRecordsResponseDeleteRecordsTopicResult(
                    name=topic.name, partitions=partitions
                )
            )
        return m.DeleteRecordsResponse(topics=topics), request.api_version

    # --- configs ----------------------------------------------------------------------------

    async def describe_configs(self, request: Request) -> Reply:
        body: m.DescribeConfigsRequest = request.body
        results = []
        for resource in body.resources:
            result = m.DescribeConfigsResponseDescribeConfigsResult(
                resource_type=resource.resource_type, resource_name=resource.resource_name
            )
            results.append(result)
            if resource.resource_type == BROKER_RESOURCE:
                result.configs = []
                continue
            if resource.resource_type != TOPIC_RESOURCE:
                result.error_code = INVALID_REQUEST
                result.error_message = f"unsupported resource type {resource.resource_type}"
                continue
            try:
                config = self.manager.topic(resource.resource_name).config
            except HeadwaterError as error:
                result.error_code = _error_code(error)
                result.error_message = str(error)
                continue
            keys = resource.configuration_keys
            result.configs = [
                m.DescribeConfigsResponseDescribeConfigsResourceResult(
                    name=name,
                    value=value,
                    read_only=False,
                    is_default=is_default if request.api_version == 0 else False,
                    config_source=DEFAULT_CONFIG if is_default else DYNAMIC_TOPIC_CONFIG,
                    is_sensitive=False,
                    documentation=documentation if body.include_documentation else None,
                )
                for name, value, is_default, documentation in config.describe()
                if keys is None or name in keys
            ]
        return m.DescribeConfigsResponse(results=results), request.api_version

    async def alter_configs(self, request: Request) -> Reply:
        """Legacy AlterConfigs: the given set replaces every override, as in Kafka."""
        body: m.AlterConfigsRequest = request.body
        responses = []
        for resource in body.resources:
            result = m.AlterConfigsResponseAlterConfigsResourceResponse(
                resource_type=resource.resource_type, resource_name=resource.resource_name
            )
            responses.append(result)
            changes: dict[str, str | None] = {}
            try:
                self._check_topic_resource(resource.resource_type)
                current = self.manager.topic(resource.resource_name).config
                changes = dict.fromkeys(current.overrides)
                changes.update({config.name: config.value for config in resource.configs})
                self._alter(resource.resource_name, changes, body.validate_only)
            except HeadwaterError as error:
                result.error_code = _error_code(error)
                result.error_message = str(error)
        return m.AlterConfigsResponse(responses=responses), request.api_version

    async def incremental_alter_configs(self, request: Request) -> Reply:
        body: m.IncrementalAlterConfigsRequest = request.body
        responses = []
        for resource in body.resources:
            result = m.IncrementalAlterConfigsResponseAlterConfigsResourceResponse(
                resource_type=resource.resource_type, resource_name=resource.resource_name
            )
            responses.append(result)
            try:
                self._check_topic_resource(resource.resource_type)
                changes: dict[str, str | None] = {}
                for config in resource.configs:
                    if config.config_operation == 0:  # SET
                        changes[config.name] = config.value
                    elif config.config_operation == 1:  # DELETE
                        changes[config.name] = None
                    else:  # APPEND / SUBTRACT apply to list configs, which topics here have none of
                        raise ConfigError(
                            f"operation {config.config_operation} is not valid for {config.name!r}"
                        )
                self._alter(resource.resource_name, changes, body.validate_only)
            except HeadwaterError as error:
                result.error_code = _error_code(error)
                result.error_message = str(error)
        return m.IncrementalAlterConfigsResponse(responses=responses), request.api_version

    def _check_topic_resource(self, resource_type: int) -> None:
        if resource_type != TOPIC_RESOURCE:
            raise ConfigError(f"only topic configs can be altered (resource type {resource_type})")

    def _alter(self, topic: str, changes: dict[str, str | None], validate_only: bool) -> None:
        if validate_only:
            self.manager.topic(topic).config.altered(changes)
        else:
            self.manager.alter_topic_config(topic, changes)


__all__ = ["SUPPORTED_VERSIONS", "Handlers"]
