"""The examples: each app through the TestDriver against a brute-force reference written here,
and each demo run end to end (a subprocess on a fresh embedded log) printing exactly the
reference's alerts or aggregates."""

from __future__ import annotations

import importlib
import inspect
import random
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import headwater.streams
from headwater.streams import App
from headwater.streams.testing import TestDriver

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
sys.path.insert(0, str(EXAMPLES))
fraud: ModuleType = importlib.import_module("fraud_detection")
traffic: ModuleType = importlib.import_module("traffic_sensors")

has_runtime = pytest.mark.skipif(
    not hasattr(headwater.streams, "Runner"), reason="the streams runtime has not landed"
)
has_rocksdb_wiring = pytest.mark.skipif(
    "state_dir" not in inspect.signature(App).parameters,
    reason="App(state_dir=..., default_store=...) is not wired yet",
)


def send_in_batches(driver: TestDriver, topic: str, records: list[Any], seed: int) -> None:
    """Random batch sizes: the result must not depend on how records are batched."""
    rng = random.Random(seed)
    i = 0
    while i < len(records):
        size = rng.randint(1, 50)
        driver.send_many(topic, records[i : i + size])
        i += size


def recent_start_ms() -> int:
    """A whole minute an hour or more ago: recent enough for any retention, deterministic
    for the run."""
    return (time.time_ns() // 1_000_000 - 3 * 3_600_000) // 60_000 * 60_000


# --- fraud detection ----------------------------------------------------------------------------


def fraud_reference(
    accounts: list[tuple[str, dict[str, Any]]], payments: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """For each payment (in order), its card's payments within the 60 s before it, inclusive;
    an alert per rule they break."""
    table = dict(accounts)
    history: dict[str, list[dict[str, Any]]] = {}
    alerts = []
    for payment in payments:
        card, ts = payment["card"], payment["ts"]
        account = table.get(card)
        if account is None:
            continue
        history.setdefault(card, []).append(payment)
        recent = [p for p in history[card] if ts - 60_000 <= p["ts"] <= ts]
        recent.sort(key=lambda p: p["ts"])  # stable: arrival order among equal times
        base = {
            "card": card,
            "account": account["account"],
            "home_country": account["home_country"],
            "payments": len(recent),
            "total": sum(p["amount"] for p in recent),
            "limit": account["limit"],
            "window_start": ts - 60_000,
            "window_end": ts + 1,
            "merchants": [p["merchant"] for p in recent],
        }
        if len(recent) > 5:
            alerts.append({**base, "rule": "velocity"})
        if base["total"] > account["limit"]:
            alerts.append({**base, "rule": "over-limit"})
    return alerts


def run_fraud(app: App, events: int, seed: int = 7) -> tuple[list[Any], list[dict[str, Any]]]:
    accounts, payments = fraud.generate(events, seed=seed)
    driver = TestDriver(app, {"payments": 3, "accounts": 3})
    try:
        driver.send_many("accounts", [(card, account, 0) for card, account in accounts])
        send_in_batches(driver, "payments", [(p["card"], p, p["ts"]) for p in payments], seed)
        out = driver.output("alerts")
    finally:
        if hasattr(driver, "close"):  # RocksDB stores hold files and a lock
            driver.close()
    return out, fraud_reference(accounts, payments)


def by_card(alerts: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for alert in alerts:
        out.setdefault(alert["card"], []).append(alert)
    return out


@pytest.mark.parametrize("seed", [7, 8, 9])
def test_fraud_alerts_are_the_reference(seed: int) -> None:
    out, expected = run_fraud(fraud.build_app(), 1_500, seed)
    assert all(record.key == record.value["card"] for record in out)
    alerts = [record.value for record in out]
    assert by_card(alerts) == by_card(expected)  # per card, in order
    rules = Counter(alert["rule"] for alert in expected)
    assert rules["velocity"] > 5 and rules["over-limit"] > 3  # the data exercises both rules


def test_fraud_demo_data_is_deterministic() -> None:
    assert fraud.generate(300) == fraud.generate(300)
    accounts, payments = fraud.generate(300, start_ms=0)
    assert len(payments) == 300 and len(accounts) == 50
    assert [p["ts"] for p in payments] == sorted(p["ts"] for p in payments)
    line = fraud.format_alert(fraud_reference(accounts, payments)[0])
    assert line.startswith("ALERT ") and "payments, total" in line


@has_rocksdb_wiring
def test_fraud_alerts_with_rocksdb_state(tmp_path: Path) -> None:
    app = fraud.build_app(state_dir=tmp_path, default_store="rocksdb")
    out, expected = run_fraud(app, 600)
    assert by_card([record.value for record in out]) == by_card(expected)


# --- traffic sensors ----------------------------------------------------------------------------


def traffic_reference(readings: list[dict[str, Any]]) -> dict[tuple[str, int], dict[str, Any]]:
    """Every 5-minute window starting on a whole minute, per intersection, with its readings'
    totals."""
    windows: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for reading in readings:
        ts = reading["ts"]
        start = ts - ts % 60_000
        while start > ts - 300_000:
            windows.setdefault((reading["intersection"], start), []).append(reading)
            start -= 60_000
    out = {}
    for (intersection, start), inside in windows.items():
        vehicles = sum(r["vehicles"] for r in inside)
        weighted = sum(r["vehicles"] * r["speed"] for r in inside)
        mean = round(weighted / vehicles, 1) if vehicles else None
        out[(intersection, start)] = {
            "intersection": intersection,
            "window_start": start,
            "window_end": start + 300_000,
            "readings": len(inside),
            "vehicles": vehicles,
            "mean_speed": mean,
            "congested": mean is not None and mean < 20,
        }
    return out


def closed_by(
    reference: dict[tuple[str, int], dict[str, Any]], stream_time: int
) -> list[dict[str, Any]]:
    """The windows closed once event time reached `stream_time` (end + 10 s grace)."""
    return [a for a in reference.values() if a["window_end"] + 10_000 <= stream_time]


def key_of(aggregate: dict[str, Any]) -> tuple[str, int]:
    return (aggregate["intersection"], aggregate["window_start"])


@pytest.mark.parametrize("seed", [11, 12])
def test_traffic_aggregates_are_the_reference(seed: int) -> None:
    readings = traffic.generate(1_000, seed=seed)
    reference = traffic_reference(readings)
    driver = TestDriver(traffic.build_app(), {"readings": 3})
    send_in_batches(driver, "readings", [(r["intersection"], r, r["ts"]) for r in readings], 1)
    live = [record.value for record in driver.take_output("traffic-5min")]
    driver.finish()  # end of input: the windows still open close too
    rest = [record.value for record in driver.take_output("traffic-5min")]
    last = readings[-1]["ts"]  # every intersection reports then, on every partition
    assert sorted(live, key=key_of) == sorted(closed_by(reference, last), key=key_of)
    assert sorted(live + rest, key=key_of) == sorted(reference.values(), key=key_of)
    assert any(a["congested"] for a in live) and not all(a["congested"] for a in live)


def test_traffic_demo_data_is_deterministic() -> None:
    assert traffic.generate(100) == traffic.generate(100)
    readings = traffic.generate(100, start_ms=0)
    assert len(readings) == 104  # rounded up to whole rounds of 8 intersections
    assert {r["ts"] for r in readings[-8:]} == {readings[-1]["ts"]}


# --- the demos, end to end ----------------------------------------------------------------------


def run_demo(script: str, tmp_path: Path, *args: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / script), "--data-dir", str(tmp_path / "data"), *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.splitlines()


@has_runtime
def test_fraud_demo_prints_the_reference_alerts(tmp_path: Path) -> None:
    start = recent_start_ms()
    lines = run_demo(
        "fraud_detection.py", tmp_path, "--events", "600", "--rate", "0", "--start-ms", str(start)
    )
    accounts, payments = fraud.generate(600, start_ms=start)
    expected = [fraud.format_alert(alert) for alert in fraud_reference(accounts, payments)]
    assert sorted(line for line in lines if line.startswith("ALERT")) == sorted(expected)
    assert lines[0] == "50 accounts loaded, sending 600 payments"
    assert lines[-1] == f"600 payments, {len(expected)} alerts"


@has_runtime
def test_traffic_demo_prints_the_reference_aggregates(tmp_path: Path) -> None:
    start = recent_start_ms()
    lines = run_demo(
        "traffic_sensors.py", tmp_path, "--events", "400", "--rate", "0", "--start-ms", str(start)
    )
    readings = traffic.generate(400, start_ms=start)
    closed = closed_by(traffic_reference(readings), readings[-1]["ts"])
    expected = [traffic.format_aggregate(aggregate) for aggregate in closed]
    assert sorted(line for line in lines if line.startswith("int-")) == sorted(expected)
    assert lines[0] == "sending 400 readings"
    assert lines[-1] == f"400 readings, {len(expected)} aggregates"
