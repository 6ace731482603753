"""Transactions, differential: librdkafka's transactional producer and read-committed consumers
against Headwater and a real Kafka 4.1.1, asserting the same observable outcome on both:

* a committed transaction is read whole by read-committed consumers, and its markers take an
  offset each, as on Kafka;
* an aborted transaction is hidden from read-committed consumers and seen by read-uncommitted
  ones;
* an open transaction holds read-committed consumers back at its first offset until it ends;
* a second producer with the same transactional id fences the first, whose open transaction
  is aborted;
* consume-transform-produce: offsets sent to the transaction are committed with it, and not
  when it aborts;
* on Headwater only (a restart): a broker SIGKILLed mid-transaction comes back, aborts the
  transaction when it times out, and read-committed consumers move past it.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from broker_process import ServedBroker
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    IsolationLevel,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import OffsetSpec
from test_differential import admin, create_topic, unique
from test_robustness import RawClient, produce_request

from headwater.log.record_batch import ControlType, NewRecord, encode_batch, encode_control_batch
from headwater.protocol import messages as m

pytestmark = pytest.mark.timeout(180)


def transactional_producer(bootstrap: str, transactional_id: str, **extra: Any) -> Producer:
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "transactional.id": transactional_id,
            "linger.ms": 5,
            "log_level": 0,
            **extra,
        }
    )
    producer.init_transactions(30)
    return producer


def read_all(
    bootstrap: str,
    topic: str,
    partitions: int,
    isolation: str,
    *,
    expect: int,
    wait_s: float = 15.0,
    quiet_s: float = 1.0,
) -> list[tuple[int, int, bytes]]:
    """(partition, offset, value) of every record a fresh consumer with `isolation` reads,
    waiting up to `wait_s` for `expect` of them, then `quiet_s` more for any extra."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": unique("reader"),
            "enable.auto.commit": False,
            "isolation.level": isolation,
            "log_level": 0,
        }
    )
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    seen: list[tuple[int, int, bytes]] = []
    try:
        deadline = time.monotonic() + wait_s
        quiet_until: float | None = None
        while True:
            now = time.monotonic()
            if len(seen) >= expect and quiet_until is None:
                quiet_until = now + quiet_s
            if now >= (quiet_until if quiet_until is not None else deadline):
                break
            message = consumer.poll(0.2)
            if message is None or message.error() is not None:
                continue
            seen.append((message.partition(), message.offset(), message.value()))
    finally:
        consumer.close()
    return sorted(seen)


def high_watermarks(bootstrap: str, topic: str, partitions: int) -> list[int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": unique("hw"), "log_level": 0})
    try:
        return [
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in range(partitions)
        ]
    finally:
        consumer.close()


def values(records: list[tuple[int, int, bytes]]) -> list[bytes]:
    return sorted(value for _, _, value in records)


# --- 1. commit --------------------------------------------------------------------------------


def test_a_committed_transaction_is_read_whole_and_its_markers_take_offsets(
    bootstrap: str,
) -> None:
    topic = unique("txn-commit")
    create_topic(bootstrap, topic, 2)
    producer = transactional_producer(bootstrap, unique("tx"))
    for round_number in range(2):
        producer.begin_transaction()
        for i in range(10):
            producer.produce(topic, f"{round_number}-{i}".encode(), partition=i % 2)
        producer.commit_transaction(30)
    wanted = sorted(f"{r}-{i}".encode() for r in range(2) for i in range(10))
    committed = read_all(bootstrap, topic, 2, "read_committed", expect=20)
    assert values(committed) == wanted
    # 5 records, a marker, 5 records, a marker on each partition.
    assert sorted(offset for partition, offset, _ in committed if partition == 0) == [
        *range(5),
        *range(6, 11),
    ]
    assert high_watermarks(bootstrap, topic, 2) == [12, 12]
    assert values(read_all(bootstrap, topic, 2, "read_uncommitted", expect=20)) == wanted


# --- 2. abort ---------------------------------------------------------------------------------


def test_an_aborted_transaction_is_hidden_from_read_committed_consumers(bootstrap: str) -> None:
    topic = unique("txn-abort")
    create_topic(bootstrap, topic, 2)
    producer = transactional_producer(bootstrap, unique("tx"))
    producer.begin_transaction()
    for i in range(6):
        producer.produce(topic, f"aborted-{i}".encode(), partition=i % 2)
    producer.flush(10)
    producer.abort_transaction(30)
    producer.begin_transaction()
    for i in range(4):
        producer.produce(topic, f"kept-{i}".encode(), partition=i % 2)
    producer.commit_transaction(30)
    committed = read_all(bootstrap, topic, 2, "read_committed", expect=4)
    assert values(committed) == sorted(f"kept-{i}".encode() for i in range(4))
    uncommitted = read_all(bootstrap, topic, 2, "read_uncommitted", expect=10)
    assert values(uncommitted) == sorted(
        [f"aborted-{i}".encode() for i in range(6)] + [f"kept-{i}".encode() for i in range(4)]
    )
    assert high_watermarks(bootstrap, topic, 2) == [7, 7]  # 3 + marker + 2 + marker


# --- 3. an open transaction holds read-committed consumers back ------------------------------


def test_an_open_transaction_holds_read_committed_consumers_at_its_start(bootstrap: str) -> None:
    topic = unique("txn-open")
    create_topic(bootstrap, topic, 1)
    plain = Producer({"bootstrap.servers": bootstrap, "log_level": 0})
    plain.produce(topic, b"before", partition=0)
    plain.flush(10)
    producer = transactional_producer(bootstrap, unique("tx"))
    producer.begin_transaction()
    producer.produce(topic, b"inside", partition=0)
    producer.flush(10)
    plain.produce(topic, b"after", partition=0)  # stable only once the transaction ends
    plain.flush(10)
    held = read_all(bootstrap, topic, 1, "read_committed", expect=99, wait_s=3)
    assert values(held) == [b"before"]
    assert values(read_all(bootstrap, topic, 1, "read_uncommitted", expect=3)) == [
        b"after",
        b"before",
        b"inside",
    ]
    producer.commit_transaction(30)
    assert values(read_all(bootstrap, topic, 1, "read_committed", expect=3)) == [
        b"after",
        b"before",
        b"inside",
    ]


# --- 4. fencing -------------------------------------------------------------------------------


def test_a_second_producer_with_the_same_id_fences_the_first(bootstrap: str) -> None:
    topic = unique("txn-fence")
    create_topic(bootstrap, topic, 1)
    transactional_id = unique("tx")
    first = transactional_producer(bootstrap, transactional_id)
    first.begin_transaction()
    first.produce(topic, b"zombie", partition=0)
    first.flush(10)
    second = transactional_producer(bootstrap, transactional_id)  # aborts the open one
    second.begin_transaction()
    second.produce(topic, b"survivor", partition=0)
    second.commit_transaction(30)
    with pytest.raises(KafkaException) as raised:
        first.produce(topic, b"late", partition=0)
        first.commit_transaction(10)
    error: KafkaError = raised.value.args[0]
    assert error.fatal() or error.code() in (
        KafkaError._FENCED,
        KafkaError.PRODUCER_FENCED,
        KafkaError.INVALID_PRODUCER_EPOCH,
    ), error
    assert values(read_all(bootstrap, topic, 1, "read_committed", expect=1)) == [b"survivor"]


# --- 5. consume-transform-produce -------------------------------------------------------------


def committed_offsets(bootstrap: str, group: str, topic: str) -> list[int]:
    check = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "isolation.level": "read_committed",
            "log_level": 0,
        }
    )
    try:
        return [tp.offset for tp in check.committed([TopicPartition(topic, 0)], timeout=15)]
    finally:
        check.close()


def test_offsets_sent_to_a_transaction_commit_with_it_and_not_on_abort(bootstrap: str) -> None:
    source, sink, group = unique("ctp-in"), unique("ctp-out"), unique("ctp-group")
    create_topic(bootstrap, source, 1)
    create_topic(bootstrap, sink, 1)
    plain = Producer({"bootstrap.servers": bootstrap, "log_level": 0})
    for i in range(10):
        plain.produce(source, str(i).encode(), partition=0)
    plain.flush(10)
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "log_level": 0,
        }
    )
    producer = transactional_producer(bootstrap, unique("tx"))
    try:
        consumer.subscribe([source])
        taken: list[bytes] = []
        deadline = time.monotonic() + 30
        while len(taken) < 6 and time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is not None and message.error() is None:
                taken.append(message.value())
        assert len(taken) >= 6
        taken = taken[:6]
        consumer.seek(TopicPartition(source, 0, 6))
        # Transaction 1 carries the first six, and their offsets: committed.
        producer.begin_transaction()
        for value in taken:
            producer.produce(sink, value + b"!", partition=0)
        producer.send_offsets_to_transaction(
            [TopicPartition(source, 0, 6)], consumer.consumer_group_metadata(), 30
        )
        producer.commit_transaction(30)
        assert committed_offsets(bootstrap, group, source) == [6]
        # Transaction 2 claims the rest, then aborts: the offsets stay at 6.
        producer.begin_transaction()
        producer.produce(sink, b"never", partition=0)
        producer.send_offsets_to_transaction(
            [TopicPartition(source, 0, 10)], consumer.consumer_group_metadata(), 30
        )
        producer.abort_transaction(30)
        assert committed_offsets(bootstrap, group, source) == [6]
    finally:
        consumer.close()
    assert values(read_all(bootstrap, sink, 1, "read_committed", expect=6)) == sorted(
        value + b"!" for value in taken
    )


# --- 6. Headwater only: a restart mid-transaction ---------------------------------------------


def test_a_transaction_open_across_a_broker_kill_is_aborted_at_its_timeout(
    tmp_path: Path, launch_broker: Any
) -> None:
    data, log = tmp_path / "data", tmp_path / "broker.log"
    broker: ServedBroker = launch_broker(data, log)
    topic = unique("txn-restart")
    create_topic(broker.bootstrap, topic, 1)
    transactional_id = f"tx-{uuid.uuid4().hex[:8]}"
    producer = transactional_producer(
        broker.bootstrap, transactional_id, **{"transaction.timeout.ms": 4000}
    )
    producer.begin_transaction()
    producer.produce(topic, b"orphan", partition=0)
    producer.flush(10)
    port = broker.port
    broker.process.kill()
    broker.process.wait(timeout=30)
    restarted: ServedBroker = launch_broker(data, log, port=port)
    # Held back until the coordinator, which remembers the transaction, aborts it.
    plain = Producer({"bootstrap.servers": restarted.bootstrap, "log_level": 0})
    plain.produce(topic, b"later", partition=0)
    plain.flush(10)
    assert values(read_all(restarted.bootstrap, topic, 1, "read_committed", expect=1)) == [b"later"]
    assert values(read_all(restarted.bootstrap, topic, 1, "read_uncommitted", expect=2)) == [
        b"later",
        b"orphan",
    ]
    # The same transactional id starts afresh with a higher epoch.
    again = transactional_producer(restarted.bootstrap, transactional_id)
    again.begin_transaction()
    again.produce(topic, b"next", partition=0)
    again.commit_transaction(30)
    assert values(read_all(restarted.bootstrap, topic, 1, "read_committed", expect=2)) == [
        b"later",
        b"next",
    ]
    assert "Traceback" not in log.read_text(errors="replace")


# --- 7. what a producer may write: Kafka's transaction verification ----------------------------


def test_transactional_produce_is_verified_against_the_coordinator(bootstrap: str) -> None:
    """Raw requests, so each check is reached on its own: a transactional batch needs the
    request's transactional id, that id's producer id and epoch, and the partition added to
    its open transaction; markers are the coordinator's alone; a producer with a transaction
    open writes only transactional batches there."""
    topic = unique("txn-verify")
    create_topic(bootstrap, topic, 1)
    transactional_id = unique("tx")
    port = int(bootstrap.rsplit(":", 1)[1])
    answers: dict[str, int] = {}
    with RawClient(SimpleNamespace(port=port)) as client:  # type: ignore[arg-type]

        def produce(label: str, batch: bytes, request_id: str | None = transactional_id) -> None:
            for _ in range(20):
                request = produce_request(topic, batch)
                request.transactional_id = request_id
                response = client.request(0, 9, request)
                (partition,) = response.responses[0].partition_responses
                answers[label] = partition.error_code
                # Kafka verifies through its own inter-broker client: until that is connected
                # it may answer retriable NOT_LEADER_OR_FOLLOWER or NOT_ENOUGH_REPLICAS.
                if partition.error_code not in (6, 19):
                    return
                time.sleep(0.5)

        deadline = time.monotonic() + 30
        while True:  # Kafka's transaction coordinator may still be loading
            found = client.request(
                10, 3, m.FindCoordinatorRequest(key=transactional_id, key_type=1)
            )
            init = client.request(
                22,
                4,
                m.InitProducerIdRequest(
                    transactional_id=transactional_id,
                    transaction_timeout_ms=60_000,
                    producer_id=-1,
                    producer_epoch=-1,
                ),
            )
            if (found.error_code, init.error_code) == (0, 0) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert init.error_code == 0
        producer_id, epoch = init.producer_id, init.producer_epoch

        def data(sequence: int, *, pid: int = producer_id, ep: int = epoch) -> bytes:
            return encode_batch(
                [NewRecord(b"k", b"v")],
                producer_id=pid,
                producer_epoch=ep,
                base_sequence=sequence,
                is_transactional=True,
            )

        produce("no transactional id", data(0), None)
        produce("unknown transactional id", data(0), unique("nobody"))
        produce("partition not added", data(0))
        added = client.request(
            24,
            3,
            m.AddPartitionsToTxnRequest(
                v3_and_below_transactional_id=transactional_id,
                v3_and_below_producer_id=producer_id,
                v3_and_below_producer_epoch=epoch,
                v3_and_below_topics=[
                    m.AddPartitionsToTxnRequestAddPartitionsToTxnTopic(name=topic, partitions=[0])
                ],
            ),
        )
        assert (
            added.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code == 0
        )
        produce("wrong producer id", data(0, pid=producer_id + 1000))
        produce("higher epoch", data(0, ep=epoch + 1))
        produce("added", data(0))
        produce(
            "non-transactional batch meanwhile",
            encode_batch(
                [NewRecord(b"k", b"v")],
                producer_id=producer_id,
                producer_epoch=epoch,
                base_sequence=1,
            ),
        )
        produce(
            "a client's marker",
            encode_control_batch(
                producer_id=producer_id,
                producer_epoch=epoch,
                control_type=ControlType.COMMIT,
                coordinator_epoch=0,
                timestamp_ms=int(time.time() * 1000),
            ),
        )
        ended = client.request(
            26,
            3,
            m.EndTxnRequest(
                transactional_id=transactional_id,
                producer_id=producer_id,
                producer_epoch=epoch,
                committed=False,
            ),
        )
        assert ended.error_code == 0
        time.sleep(1)  # Kafka writes the markers just after answering EndTxn
        produce("after the abort", data(1))
    assert answers == {
        "no transactional id": 53,  # TRANSACTIONAL_ID_AUTHORIZATION_FAILED
        "unknown transactional id": 49,  # INVALID_PRODUCER_ID_MAPPING
        "partition not added": 48,  # INVALID_TXN_STATE
        "wrong producer id": 49,
        "higher epoch": 47,  # INVALID_PRODUCER_EPOCH
        "added": 0,
        "non-transactional batch meanwhile": 48,
        "a client's marker": 87,  # INVALID_RECORD
        "after the abort": 48,  # no hanging transaction
    }
    # One record, then the abort marker; read committed sees nothing.
    assert high_watermarks(bootstrap, topic, 1) == [2]
    assert read_all(bootstrap, topic, 1, "read_committed", expect=0, wait_s=2) == []


# --- 8. the coordinators' topics take no client writes -----------------------------------------


def test_clients_cannot_produce_to_the_internal_topics(bootstrap: str) -> None:
    # Make sure both internal topics exist on either broker: a transaction and a group commit.
    topic, group = unique("txn-internal"), unique("internal-group")
    create_topic(bootstrap, topic, 1)
    producer = transactional_producer(bootstrap, unique("tx"))
    producer.begin_transaction()
    producer.produce(topic, b"v", partition=0)
    producer.commit_transaction(30)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "log_level": 0})
    try:
        consumer.commit(offsets=[TopicPartition(topic, 0, 1)], asynchronous=False)
    finally:
        consumer.close()
    port = int(bootstrap.rsplit(":", 1)[1])
    answers = {}
    with RawClient(SimpleNamespace(port=port)) as client:  # type: ignore[arg-type]
        for internal in ("__consumer_offsets", "__transaction_state"):
            junk = encode_batch([NewRecord(b"junk", b"junk")])
            response = client.request(0, 9, produce_request(internal, junk))
            (partition,) = response.responses[0].partition_responses
            answers[internal] = partition.error_code
    assert answers == {"__consumer_offsets": 17, "__transaction_state": 17}  # INVALID_TOPIC


# --- 9. ListOffsets under read_committed ends at the last stable offset -------------------------


def test_list_offsets_read_committed_ends_at_the_last_stable_offset(bootstrap: str) -> None:
    topic = unique("txn-list-offsets")
    create_topic(bootstrap, topic, 1)
    plain = Producer({"bootstrap.servers": bootstrap, "log_level": 0})
    for value in (b"a", b"b"):
        plain.produce(topic, value, partition=0)
    plain.flush(10)
    producer = transactional_producer(bootstrap, unique("tx"))
    producer.begin_transaction()
    producer.produce(topic, b"open", partition=0)
    producer.flush(10)
    plain.produce(topic, b"c", partition=0)
    plain.flush(10)
    client = admin(bootstrap)

    def latest(isolation: IsolationLevel) -> int:
        wanted = {TopicPartition(topic, 0): OffsetSpec.latest()}
        futures = client.list_offsets(wanted, isolation_level=isolation, request_timeout=15)
        return int(futures[TopicPartition(topic, 0)].result(timeout=15).offset)

    # The open transaction starts at 2: read committed ends there, read uncommitted after "c".
    assert (latest(IsolationLevel.READ_COMMITTED), latest(IsolationLevel.READ_UNCOMMITTED)) == (
        2,
        4,
    )
    producer.commit_transaction(30)
    # The marker takes offset 4: both end after it once it is written (Kafka writes markers
    # just after answering EndTxn, Headwater just before).
    deadline = time.monotonic() + 15
    while True:
        ends = (latest(IsolationLevel.READ_COMMITTED), latest(IsolationLevel.READ_UNCOMMITTED))
        if ends == (5, 5) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert ends == (5, 5)


# --- 10. DescribeTransactions and ListTransactions ----------------------------------------------


def test_describe_and_list_transactions(bootstrap: str) -> None:
    topic = unique("txn-describe")
    create_topic(bootstrap, topic, 2)
    transactional_id = unique("tx")
    producer = transactional_producer(
        bootstrap, transactional_id, **{"transaction.timeout.ms": 45_000}
    )
    producer.begin_transaction()
    for partition in (0, 1):
        producer.produce(topic, b"v", partition=partition)
    producer.flush(10)
    port = int(bootstrap.rsplit(":", 1)[1])
    with RawClient(SimpleNamespace(port=port)) as client:  # type: ignore[arg-type]

        def describe() -> tuple[int, str, int, list[tuple[str, list[int]]], bool]:
            response = client.request(
                65, 0, m.DescribeTransactionsRequest(transactional_ids=[transactional_id])
            )
            (state,) = response.transaction_states
            return (
                state.error_code,
                state.transaction_state,
                state.transaction_timeout_ms,
                [(t.topic, sorted(t.partitions)) for t in state.topics],
                state.producer_id >= 0 and state.transaction_start_time_ms > 0,
            )

        def listed(states: list[str]) -> list[tuple[str, str]]:
            response = client.request(66, 1, m.ListTransactionsRequest(state_filters=states))
            return [
                (s.transactional_id, s.transaction_state)
                for s in response.transaction_states
                if s.transactional_id == transactional_id
            ]

        open_view = describe()
        open_listing = listed(["Ongoing"]), listed(["CompleteCommit"])
        producer.commit_transaction(30)
        deadline = time.monotonic() + 15
        while describe()[1] != "CompleteCommit" and time.monotonic() < deadline:
            time.sleep(0.2)  # Kafka completes just after answering EndTxn
        closed_view = describe()
        unknown = (
            client.request(
                65, 0, m.DescribeTransactionsRequest(transactional_ids=[unique("nobody")])
            )
            .transaction_states[0]
            .error_code
        )
    assert open_view == (0, "Ongoing", 45_000, [(topic, [0, 1])], True)
    assert open_listing == ([(transactional_id, "Ongoing")], [])
    assert closed_view[:4] == (0, "CompleteCommit", 45_000, [])
    assert unknown == 105  # TRANSACTIONAL_ID_NOT_FOUND
