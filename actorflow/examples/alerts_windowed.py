"""Alerts (windowed): transactions from a generator, summed per user in sliding windows;
an alert when a window's total is above ``--threshold`` or below minus it.

The shape of Wallaroo's ``examples/python/alerts_windowed``: a generator source,
``key_by`` user, ``range_windows(9 s).with_slide(3 s).over(TotalAggregation)``, a sink.
Options (all optional): ``--window-range-ms`` (9000), ``--window-slide-ms`` (3000),
``--threshold`` (2000), ``--transactions N`` (the generator stops after N; default:
never), ``--event-time-ms MS`` (transaction i happens at i * MS ms of event time, and
windows go by that instead of the ingest time: an actorflow extension, which makes the
output reproducible).
Output, one framed line per alert: ``"Deposit Alert for Fido: 2345\n"`` or
``"Withdrawal Alert for Rex: -2100\n"``.
Run: ``actorflow worker --app actorflow.examples.alerts_windowed -c conf/alerts_windowed.conf``.
"""

import argparse
import struct

import actorflow as wallaroo

USERS = ("Fido", "Rex", "Dr. Whiskers", "Feathers", "Mountaineer")


def application_setup(args):
    opts = options(args)
    out_host, out_port = wallaroo.tcp_parse_output_addrs(args)[0]
    gen = wallaroo.GenSourceConfig(
        "Alerts (windowed)", TransactionsGenerator(opts.transactions, opts.event_time_ms)
    )
    extractor = transaction_time if opts.event_time_ms else None
    transactions = wallaroo.source("Alerts (windowed)", gen, event_time=extractor)
    windows = wallaroo.range_windows(wallaroo.milliseconds(opts.window_range_ms)).with_slide(
        wallaroo.milliseconds(opts.window_slide_ms)
    )
    pipeline = (
        transactions.key_by(extract_user)
        .to(windows.over(TotalAggregation(opts.threshold)))
        .to_sink(wallaroo.TCPSinkConfig(out_host, out_port, encode_alert))
    )
    return wallaroo.build_application("alerts_windowed", pipeline)


def options(args):
    p = argparse.ArgumentParser("alerts_windowed", add_help=False)
    p.add_argument("--window-range-ms", type=int, default=9000)
    p.add_argument("--window-slide-ms", type=int, default=3000)
    p.add_argument("--threshold", type=int, default=2000)
    p.add_argument("--transactions", type=int, default=0)
    p.add_argument("--event-time-ms", type=int, default=0)
    return p.parse_known_args(args)[0]


class Transaction:
    def __init__(self, user, amount, index=0, at=0):
        self.user = user
        self.amount = amount
        self.index = index
        self.at = at  # event time in nanoseconds (with --event-time-ms)


class TransactionTotal:
    def __init__(self, total=0):
        self.total = total


class DepositAlert:
    def __init__(self, user, amount):
        self.user = user
        self.amount = amount

    def __str__(self):
        return f"Deposit Alert for {self.user}: {self.amount}"


class WithdrawalAlert(DepositAlert):
    def __str__(self):
        return f"Withdrawal Alert for {self.user}: {self.amount}"


@wallaroo.key_extractor
def extract_user(transaction):
    return transaction.user


def transaction_time(transaction):
    return transaction.at


class TotalAggregation(wallaroo.Aggregation):
    def __init__(self, threshold=2000):
        self.threshold = threshold

    def initial_accumulator(self):
        return TransactionTotal()

    def update(self, transaction, t_total):
        t_total.total += transaction.amount

    def combine(self, t1, t2):
        return TransactionTotal(t1.total + t2.total)

    def output(self, user, t):
        if t.total > self.threshold:
            return DepositAlert(user, t.total)
        if t.total < -self.threshold:
            return WithdrawalAlert(user, t.total)
        return None


@wallaroo.encoder
def encode_alert(alert):
    line = (str(alert) + "\n").encode()
    return struct.pack(">I", len(line)) + line


class TransactionsGenerator:
    """Amounts above, below and within the thresholds, round-robin over the users."""

    def __init__(self, limit=0, event_time_ms=0):
        self.limit = limit
        self.step = wallaroo.milliseconds(event_time_ms)
        self.user_idx = 0
        self.user_totals = [1, 0, 0, 0, 0]

    def initial_value(self):
        return Transaction(USERS[0], 1, 0, 0)

    def apply(self, v):
        index = v.index + 1
        if self.limit and index >= self.limit:
            return None
        amount = ((v.amount * 2305843009213693951) + 7) % 2500 - 1250
        self.user_idx = (self.user_idx + 1) % len(USERS)
        total = self.user_totals[self.user_idx]
        if total > 5000:
            amount = -6000
        elif total < -5000:
            amount = 6000
        self.user_totals[self.user_idx] = total + amount
        return Transaction(USERS[self.user_idx], amount, index, index * self.step)


def transactions(limit, event_time_ms=0):
    """The generator's transactions, for checking outputs independently."""
    gen = TransactionsGenerator(limit, event_time_ms)
    out, v = [], gen.initial_value()
    while v is not None:
        out.append(v)
        v = gen.apply(v)
    return out


if __name__ == "__main__":
    wallaroo.run(__file__)
