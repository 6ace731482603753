"""Fraud detection: card payments checked against each card's last 60 seconds, live.

Topics
    payments  key: card id; value (JSON): {"card", "amount", "merchant", "ts"} (ms)
    accounts  key: card id; value (JSON): {"account", "home_country", "limit"}; compacted,
              read as a table (the latest value per card)
    alerts    key: card id; value (JSON): one alert per rule a payment breaks

Each payment meets its card's account (a stream-table join), then a SLIDING window of 60 s per
card gathers the card's payments within 60 s of each other. The window ending at a payment is
"the last 60 s as of this payment"; it is checked as the payment arrives (`emit="update"`):

    velocity    more than MAX_PAYMENTS payments in it
    over-limit  their total above the account's limit

Run it (on the embedded log, in a directory of your choice; it finishes by itself):

    python examples/fraud_detection.py --data-dir /tmp/fraud --events 2000

It creates the topics, loads the accounts, starts the streams runtime on its own thread,
produces the payments and prints each alert as it is read back from the `alerts` topic.
`build_app()` is the dataflow alone: the tests run it through the `TestDriver`.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _live import LivePrinter, ensure_topics, wait_until_consumed
from headwater.streams import App, Sliding, WindowResult

WINDOW_MS = 60_000  # the rules look at a card's payments within 60 s of each other
GRACE_MS = 5_000  # how late (in event time) a payment may arrive and still count
MAX_PAYMENTS = 5  # more than this many payments in WINDOW_MS: "velocity"
PARTITIONS = 3  # of payments, accounts and alerts (joined topics must have the same count)

Payment = dict[str, Any]
Account = dict[str, Any]
Alert = dict[str, Any]

# --- the dataflow -----------------------------------------------------------------------------


def _with_account(payment: Payment, account: Account) -> Payment:
    """A payment carrying its card's account (the join's output)."""
    return {**payment, **account}


def _spend_init() -> tuple[int, int, int, tuple[str, ...], Payment]:
    return (0, 0, -1, (), {})


def _spend_add(
    spend: tuple[int, int, int, tuple[str, ...], Payment], payment: Payment
) -> tuple[int, int, int, tuple[str, ...], Payment]:
    """(count, total, latest ts, merchants, latest payment): a window's payments folded in
    timestamp order, so the latest payment's account is the one checked."""
    count, total, _, merchants, _ = spend
    return (
        count + 1,
        total + payment["amount"],
        payment["ts"],
        (*merchants, payment["merchant"]),
        payment,
    )


def _spend_result(spend: tuple[int, int, int, tuple[str, ...], Payment]) -> dict[str, Any]:
    count, total, latest, merchants, payment = spend
    return {
        "count": count,
        "total": total,
        "latest": latest,
        "merchants": list(merchants),
        "account": payment["account"],
        "home_country": payment["home_country"],
        "limit": payment["limit"],
    }


def _ends_at_a_payment(card: str, result: WindowResult) -> bool:
    """The window "60 s up to this payment"; the others a payment lands in (ending later)
    are checked when their own last payment arrives."""
    return bool(result.window.end - 1 == result.value["latest"])


def alerts_for(card: str, result: WindowResult) -> list[tuple[str, Alert]]:
    """The alerts one window raises: (card, alert) per broken rule."""
    spend = result.value
    base = {
        "card": card,
        "account": spend["account"],
        "home_country": spend["home_country"],
        "payments": spend["count"],
        "total": spend["total"],
        "limit": spend["limit"],
        "window_start": result.window.start,
        "window_end": result.window.end,
        "merchants": spend["merchants"],
    }
    out: list[tuple[str, Alert]] = []
    if spend["count"] > MAX_PAYMENTS:
        out.append((card, {**base, "rule": "velocity"}))
    if spend["total"] > spend["limit"]:
        out.append((card, {**base, "rule": "over-limit"}))
    return out


def build_app(application_id: str = "fraud-detection", **settings: Any) -> App:
    """payments ⋈ accounts -> sliding 60 s per card -> rules -> alerts. `settings` go to
    `App` (where its state lives, for one)."""
    app = App(application_id, **settings)
    accounts = app.table("accounts", key="str", value="json", name="accounts")
    payments = app.stream("payments", key="str", value="json", timestamp=lambda p: p["ts"])
    (
        payments.join(accounts, _with_account, name="with-account")
        .window(Sliding(WINDOW_MS, grace_ms=GRACE_MS), name="last-minute", emit="update")
        .fold(_spend_init, _spend_add, result=_spend_result)
        .filter(_ends_at_a_payment, name="at-payment")
        .flat_map(alerts_for, name="rules")
        .to("alerts", key="str", value="json")
    )
    return app


# --- data -------------------------------------------------------------------------------------

_COUNTRIES = ["SE", "NO", "DE", "FR", "ES", "PT", "IT", "NL"]
_MERCHANTS = ["grocer", "fuel", "cafe", "books", "pharmacy", "transit", "cinema", "hardware"]
_LIMITS = [300, 500, 800, 1200, 2000]


def generate(
    events: int, *, seed: int = 7, start_ms: int = 1_700_000_000_000, cards: int = 50
) -> tuple[list[tuple[str, Account]], list[Payment]]:
    """Deterministic accounts and `events` payments (timestamps never decrease): everyday
    spending, with bursts of small payments (velocity) and runs of large ones (over-limit)
    mixed in."""
    rng = random.Random(seed)
    accounts: list[tuple[str, Account]] = [
        (
            f"card-{i:02d}",
            {
                "account": f"acct-{1000 + i}",
                "home_country": rng.choice(_COUNTRIES),
                "limit": rng.choice(_LIMITS),
            },
        )
        for i in range(cards)
    ]
    limits = {card: account["limit"] for card, account in accounts}
    payments: list[Payment] = []
    now = start_ms
    while len(payments) < events:
        now += rng.randint(500, 4_000)
        card = f"card-{rng.randrange(cards):02d}"
        roll = rng.random()
        if roll < 0.01:  # a burst: several small payments seconds apart
            for step in range(rng.randint(5, 8)):
                payments.append(_payment(rng, card, rng.randint(3, 40), now + step * 6_000))
        elif roll < 0.02:  # a run of large payments adding up past the limit
            share = limits[card] // 2
            for step in range(3):
                amount = rng.randint(share // 2, share)
                payments.append(_payment(rng, card, amount, now + step * 15_000))
        else:
            payments.append(_payment(rng, card, rng.randint(5, 80), now))
    payments.sort(key=lambda p: p["ts"])  # stable: a card's payments keep their order
    return accounts, payments[:events]


def _payment(rng: random.Random, card: str, amount: int, ts: int) -> Payment:
    merchant = f"{rng.choice(_MERCHANTS)}-{rng.randint(1, 9)}"
    return {"card": card, "amount": amount, "merchant": merchant, "ts": ts}


def format_alert(alert: Alert) -> str:
    """One line per alert, the same in the demo and in its test."""
    at = datetime.fromtimestamp((alert["window_end"] - 1) / 1000, UTC).strftime("%H:%M:%S")
    return (
        f"ALERT {alert['rule']:<10} {alert['card']} ({alert['account']}, "
        f"{alert['home_country']}) at {at}: {alert['payments']} payments, "
        f"total {alert['total']} (limit {alert['limit']}) in 60 s"
    )


# --- the demo ---------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", help="the embedded log's directory (default: a temporary)")
    parser.add_argument("--events", type=int, default=2_000, help="payments to produce")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--rate", type=float, default=1_000, help="payments per second (0: all at once)"
    )
    parser.add_argument(
        "--start-ms",
        type=int,
        default=(time.time_ns() // 1_000_000 - 3_600_000) // 60_000 * 60_000,
        help="event time of the first payment (default: an hour ago, whole minute)",
    )
    args = parser.parse_args(argv)
    accounts, payments = generate(args.events, seed=args.seed, start_ms=args.start_ms)
    if args.data_dir is None:
        with tempfile.TemporaryDirectory(prefix="headwater-fraud-") as directory:
            return _demo(Path(directory), accounts, payments, args.rate)
    return _demo(Path(args.data_dir), accounts, payments, args.rate)


def _demo(
    data_dir: Path, accounts: list[tuple[str, Account]], payments: list[Payment], rate: float
) -> int:
    import headwater
    from headwater.streams import Runner

    start_ms = payments[0]["ts"] if payments else 0
    client = headwater.connect(f"file://{data_dir.resolve()}")
    try:
        ensure_topics(
            client,
            {
                "accounts": (PARTITIONS, {"cleanup.policy": "compact"}),
                "payments": (PARTITIONS, {}),
                "alerts": (PARTITIONS, {}),
            },
        )
        printer = LivePrinter(client, "alerts", lambda card, alert: format_alert(alert))
        printer.start()
        producer = client.producer(key_serializer="str", value_serializer="json")
        for card, account in accounts:
            producer.send("accounts", account, card, timestamp=start_ms - 60_000)
        producer.flush()
        runner = Runner(build_app(), client, commit_interval_ms=1_000)
        runner.start()
        try:
            # The table first: a payment processed before its card's account would find none.
            wait_until_consumed(runner, len(accounts), timeout=60)
            print(f"{len(accounts)} accounts loaded, sending {len(payments)} payments", flush=True)
            started = time.monotonic()
            for n, payment in enumerate(payments):
                if rate > 0 and n % 50 == 0:  # paced, so the alerts come as they would live
                    time.sleep(max(0.0, started + n / rate - time.monotonic()))
                    producer.flush()
                producer.send("payments", payment, payment["card"], timestamp=payment["ts"])
            producer.flush()
            wait_until_consumed(runner, len(accounts) + len(payments), timeout=300)
        finally:
            runner.stop()  # commits: every alert is written
        printer.finish()
        producer.close()
        print(f"{len(payments)} payments, {printer.printed} alerts", flush=True)
    finally:
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
