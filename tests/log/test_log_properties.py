"""Property tests: the log against a plain list model, through appends, reads, rolls,
retention, reopen, and torn tails."""

from __future__ import annotations

import os
import shutil
import tempfile

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from headwater.log.manager import LogManager
from headwater.log.record_batch import NewRecord

_values = st.one_of(st.none(), st.binary(max_size=300))
_keys = st.one_of(st.none(), st.binary(min_size=1, max_size=8))
_record = st.tuples(_keys, _values, st.integers(min_value=0, max_value=2**40))


class LogModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.directory = tempfile.mkdtemp(prefix="headwater-model-")
        self.manager = LogManager(self.directory)
        self.manager.create_topic(
            "m", 1, {"segment.bytes": "1024", "index.interval.bytes": "64", "flush.messages": "3"}
        )
        self.model: list[tuple[bytes | None, bytes | None, int]] = []
        self.start = 0

    @property
    def log(self):  # type: ignore[no-untyped-def]
        return self.manager.partition("m", 0)

    @rule(batch=st.lists(_record, min_size=1, max_size=12))
    def append(self, batch: list[tuple[bytes | None, bytes | None, int]]) -> None:
        result = self.log.append_records([NewRecord(k, v, t) for k, v, t in batch])
        assert result.base_offset == len(self.model)
        self.model.extend(batch)

    @precondition(lambda self: len(self.model) > 0)
    @rule(data=st.data())
    def read_from_anywhere(self, data: st.DataObject) -> None:
        offset = data.draw(st.integers(min_value=self.start, max_value=len(self.model)))
        max_bytes = data.draw(st.integers(min_value=1, max_value=5000))
        result = self.log.read_records(offset, max_bytes)
        if offset < len(self.model):
            assert result.records, "at least one record comes back"
        for record in result.records:
            key, value, timestamp = self.model[record.offset]
            assert (record.key, record.value, record.timestamp) == (key, value, timestamp)
        assert [record.offset for record in result.records] == list(
            range(offset, offset + len(result.records))
        )

    @precondition(lambda self: len(self.model) > 0)
    @rule(data=st.data())
    def find_by_timestamp(self, data: st.DataObject) -> None:
        target = data.draw(st.integers(min_value=0, max_value=2**40 + 1))
        expected = next(
            (
                (offset, record[2])
                for offset, record in enumerate(self.model)
                if offset >= self.start and record[2] >= target
            ),
            None,
        )
        assert self.log.offset_for_timestamp(target) == expected

    @rule(keep=st.integers(min_value=0, max_value=40))
    def delete_records(self, keep: int) -> None:
        target = max(self.start, len(self.model) - keep)
        self.log.flush()
        self.start = self.log.delete_records(target)
        assert self.start == target

    @rule()
    def reopen_cleanly(self) -> None:
        self.manager.close()
        self.manager = LogManager(self.directory)

    @rule(data=st.data())
    def crash_and_tear_the_tail(self, data: st.DataObject) -> None:
        """Simulate a crash that tore the last write: the torn batch and only it is lost."""
        log = self.log
        log.flush()
        last = log.segments[-1]
        if last.is_empty():
            return
        # Find the last batch's position and cut inside it.
        position = 0
        for batch_position, _ in last.headers_from(0, last.size_bytes):
            position = batch_position
        cut = data.draw(st.integers(min_value=position + 1, max_value=last.size_bytes - 1))
        lost_from = last.read_header(position).base_offset
        copy = tempfile.mkdtemp(prefix="headwater-crash-")
        shutil.copytree(
            self.directory, copy, dirs_exist_ok=True
        )  # the files as a crash leaves them
        self.manager.close()
        shutil.rmtree(self.directory)
        os.rename(copy, self.directory)
        os.unlink(os.path.join(self.directory, ".lock"))
        with open(
            last.path.replace(os.path.dirname(os.path.dirname(last.path)), self.directory), "r+b"
        ) as file:
            file.truncate(cut)
        self.manager = LogManager(self.directory)
        del self.model[lost_from:]
        # The log start offset was persisted when it moved: if the tear took everything after it,
        # the log restarts there (as Kafka does), and offsets below it are never reused.
        self.model.extend([(None, None, -1)] * (self.start - len(self.model)))

    @invariant()
    def offsets_match_the_model(self) -> None:
        log = self.log
        assert log.log_end_offset == len(self.model)
        assert log.log_start_offset == self.start

    def teardown(self) -> None:
        self.manager.close()
        shutil.rmtree(self.directory, ignore_errors=True)


TestLogModel = LogModel.TestCase
TestLogModel.settings = settings(
    max_examples=40,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
