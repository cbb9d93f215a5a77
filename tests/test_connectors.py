"""Connectors against real servers: Redis, PostgreSQL, RabbitMQ, and UDP.

Each test runs a real worker (``actorflow worker``), a real server and the shipped
connector script as processes, and checks what a user would: the totals in the
receiver or the rows in the table, computed here from what was published.
"""

from __future__ import annotations

import random
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from actorflow.testing import WorkerProcess, free_port
from tests import servers
from tests.conftest import Collector, worker_args

pytestmark = pytest.mark.integration

APP = "actorflow.connectors.apps.votes"


class Script:
    """A connector script started as Wallaroo's were: module, --connector, params."""

    def __init__(self, module: str, connector: str, params: dict[str, object], app_args: list[str]):
        argv = [sys.executable, "-u", "-m", f"actorflow.connectors.{module}"]
        argv += ["--application-module", APP, "--connector", connector]
        for k, v in params.items():
            argv += [f"--{connector}-{k}", str(v)]
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            argv + app_args,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        self._seen = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            self._seen.set()

    def wait_line(self, text: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(text in line for line in self.lines):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        raise AssertionError(f"the connector did not print {text!r}:\n{''.join(self.lines)}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture
def scripts() -> Iterator:
    started: list[Script] = []

    def start(*args, **kw) -> Script:
        s = Script(*args, **kw)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


@pytest.fixture
def workers(tmp_path) -> Iterator:
    started: list[WorkerProcess] = []

    def start(args: list[str]) -> WorkerProcess:
        w = WorkerProcess(APP, args, log_path=str(tmp_path / f"worker{len(started)}.log"))
        started.append(w)
        w.start()
        w.wait_ready(60)
        return w

    yield start
    for w in started:
        w.stop()


@pytest.fixture(scope="module")
def redis_server() -> Iterator[servers.Server]:
    s = servers.redis_server()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def rabbitmq_server() -> Iterator[servers.Server]:
    s = servers.rabbitmq_server()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def postgres_server() -> Iterator[servers.Server]:
    s = servers.postgres_server()
    yield s
    s.stop()


def votes(n: int, seed: int) -> list[tuple[str, int]]:
    rng = random.Random(seed)
    return [(rng.choice("abcdefgh"), rng.randrange(1, 10)) for _ in range(n)]


def totals(vs: list[tuple[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for letter, n in vs:
        out[letter] = out.get(letter, 0) + n
    return out


def running_totals(vs: list[tuple[str, int]]) -> set[tuple[str, int]]:
    """Every (letter, running total) the app outputs, once each, computed here."""
    seen, out = {}, set()
    for letter, n in vs:
        seen[letter] = seen.get(letter, 0) + n
        out.add((letter, seen[letter]))
    return out


def final_totals(lines: list[str]) -> dict[str, int]:
    last: dict[str, int] = {}
    for line in lines:
        key, _, value = line.rstrip("\n").partition(" => ")
        last[key] = int(value)
    return last


def wait_until(check, timeout: float = 30.0, every: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got or time.monotonic() > deadline:
            return got
        time.sleep(every)


def publish_when_subscribed(redis_port: int, topic: str, vs: list[tuple[str, int]]) -> None:
    import redis

    client = redis.Redis("127.0.0.1", redis_port)
    assert wait_until(lambda: client.pubsub_numsub(topic)[0][1] >= 1), "nobody subscribed"
    pipe = client.pipeline(transaction=False)
    for i, (letter, n) in enumerate(vs):
        pipe.publish(topic, f"{letter} {n}")
        if i % 1000 == 999:
            pipe.execute()
    pipe.execute()
    client.close()


def test_redis_source_into_a_worker_exact_totals(redis_server, workers, scripts, collector):
    in_port = free_port()
    args = worker_args(in_port, collector.port, "--time-between-checkpoints", "0.2", name="votes")
    workers(args)
    topic = "votes-exact"
    script = scripts("redis_source", "votes", {"topic": topic, "port": redis_server.port}, args)
    script.wait_line("subscribed")
    vs = votes(5_000, seed=1)
    publish_when_subscribed(redis_server.port, topic, vs)
    want = totals(vs)
    got = wait_until(lambda: final_totals(collector.lines()) == want and want, 30)
    assert got, f"{final_totals(collector.lines())} != {want}"
    assert len(collector.lines()) == len(vs)


def pg_rows(dsn: str, table: str) -> list[tuple[str, int]]:
    import psycopg2

    conn = psycopg2.connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(f"SELECT letter, total FROM {table}")
            return [(a, int(b)) for a, b in cur.fetchall()]
    finally:
        conn.close()


def pg_create(dsn: str, table: str) -> None:
    import psycopg2

    conn = psycopg2.connect(dsn)
    with conn, conn.cursor() as cur:
        cur.execute(f"CREATE TABLE {table} (letter text NOT NULL, total bigint NOT NULL)")
    conn.close()


def kill_worker(w: WorkerProcess) -> None:
    """SIGKILL the worker command; its guard ends its actors: wait until they are gone."""
    from actorflow.processes import group_alive

    assert w.proc is not None
    w.proc.kill()
    w.proc.wait(10)
    assert wait_until(lambda: not (w.pgid and group_alive(w.pgid)), 15), "actors outlived it"


def _redis_feed(server: servers.Server, topic: str):
    params = {"topic": topic, "port": server.port}
    return (
        "redis_source",
        params,
        "subscribed",
        lambda vs: publish_when_subscribed(server.port, topic, vs),
    )


def _rabbitmq_feed(server: servers.Server, queue: str):
    import pika

    conn = pika.BlockingConnection(pika.URLParameters(server.url))
    channel = conn.channel()
    channel.queue_declare(queue=queue, durable=True)

    def publish(vs):
        for letter, n in vs:
            channel.basic_publish("", queue, f"{letter} {n}".encode())

    params = {"amqpurl": server.url, "queue": queue}
    return "rabbitmq_source", params, "consuming", publish


@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
def test_into_postgres_exactly_once_through_a_sigkilled_worker(
    broker, request, postgres_server, workers, scripts
):
    """A source connector (Redis pub/sub, or a RabbitMQ queue) into the app, the
    PostgreSQL insert sink out of it; the worker is SIGKILLed mid-stream and started
    again with the same command: the table holds every output exactly once."""
    server = request.getfixturevalue(f"{broker}_server")
    feed = _redis_feed if broker == "redis" else _rabbitmq_feed
    module, params, ready, publish = feed(server, f"votes-crash-{broker}")
    dsn, table = postgres_server.dsn, f"totals_crash_{broker}"
    pg_create(dsn, table)
    args = worker_args(
        free_port(),
        free_port(),
        "--time-between-checkpoints",
        "0.2",
        "--sink-connector-port",
        str(free_port()),
        name="votes",
    )
    sink = scripts("postgres_sink", "totals", {"connection": dsn, "table": table}, args)
    sink.wait_line("listening")
    worker = workers(args)
    scripts(module, "votes", params, args).wait_line(ready)
    vs = votes(20_000, seed=7)
    killed = threading.Event()

    def send() -> None:  # paced, the crash comes while it sends
        for k in range(0, len(vs), 500):
            if k >= len(vs) * 0.7:
                killed.wait(60)  # the last 30% only after the crash, at the latest
            publish(vs[k : k + 500])
            time.sleep(0.05)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    assert wait_until(lambda: len(pg_rows(dsn, table)) >= 1_000, 30), "nothing committed"
    kill_worker(worker)
    killed.set()
    workers(args)  # the same command again
    sender.join(60)
    done = wait_until(lambda: len(pg_rows(dsn, table)) >= len(vs), 60)
    rows = pg_rows(dsn, table)
    assert done, f"{len(rows)} of {len(vs)} rows"
    assert len(rows) == len(set(rows)) == len(vs), "an output inserted twice or lost"
    assert set(rows) == running_totals(vs)


def test_two_workers_into_postgres_exactly_once_when_one_is_sigkilled(
    redis_server, postgres_server, scripts, tmp_path
):
    """Two workers, a Redis source connector beside each, every worker's sink committing
    into one PostgreSQL sink connector; the joiner is SIGKILLed mid-stream and
    restarted: the table holds every output exactly once. (Each letter comes from one
    topic, so its running totals do not depend on how the sources interleave.)"""
    from actorflow.testing import Cluster

    dsn, table = postgres_server.dsn, "totals_two"
    pg_create(dsn, table)
    sink_port = free_port()
    extra = ["--time-between-checkpoints", "0.2", "--sink-connector-port", str(sink_port)]
    cluster = Cluster(
        APP, 2, [free_port()], source_name="votes", extra=extra, log_dir=str(tmp_path)
    )
    try:
        sink = scripts(
            "postgres_sink", "totals", {"connection": dsn, "table": table}, cluster.args(0)
        )
        sink.wait_line("listening")
        cluster.start()
        feeds = {"t1": votes(12_000, seed=21), "t2": votes(12_000, seed=22)}
        feeds["t2"] = [(chr(ord(a) + 8), n) for a, n in feeds["t2"]]  # letters i-p
        for i, topic in enumerate(feeds):
            params = {"topic": topic, "port": redis_server.port}
            scripts("redis_source", "votes", params, cluster.args(i)).wait_line("subscribed")

        killed = threading.Event()

        def send(topic: str) -> None:  # paced, the crash comes while it sends
            vs = feeds[topic]
            for k in range(0, len(vs), 250):
                if k >= len(vs) * 0.7:
                    killed.wait(60)  # the last 30% only after the crash, at the latest
                publish_when_subscribed(redis_server.port, topic, vs[k : k + 250])
                time.sleep(0.05)

        senders = [threading.Thread(target=send, args=(t,), daemon=True) for t in feeds]
        for t in senders:
            t.start()
        total = sum(len(vs) for vs in feeds.values())
        assert wait_until(lambda: len(pg_rows(dsn, table)) >= 500, 30), "nothing committed"
        kill_worker(cluster.workers[1])
        killed.set()
        cluster.start_worker(1).wait_ready(60)
        for t in senders:
            t.join(60)
        done = wait_until(lambda: len(pg_rows(dsn, table)) >= total, 60)
        rows = pg_rows(dsn, table)
        assert done, f"{len(rows)} of {total} rows"
        assert len(rows) == len(set(rows)) == total, "an output inserted twice or lost"
        assert set(rows) == running_totals(feeds["t1"]) | running_totals(feeds["t2"])
        import psycopg2

        with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
            cur.execute("SELECT sink FROM actorflow_commits WHERE sink LIKE '%%@worker_/%%'")
            committers = sorted(sink.split("@")[1].split("/")[0] for (sink,) in cur.fetchall())
        conn.close()
        assert committers == ["worker1", "worker2"], "both workers' sinks commit"
    finally:
        cluster.stop()


def source_status(control_port: int) -> dict:
    from actorflow.control import query_status

    status = query_status(("127.0.0.1", control_port))
    return next(a for a in status["actors"].values() if a["kind"] == "source")


def control_port(args: list[str]) -> int:
    return int(args[args.index("--control") + 1].rsplit(":", 1)[1])


def test_wrong_cookie_is_refused(workers):
    from actorflow.experimental import ConnectorError, SourceConnector

    in_port = free_port()
    args = worker_args(in_port, free_port(), name="votes")
    workers(args)
    connector = SourceConnector(
        args=["--application-module", APP, "--connector", "votes", *args]
        + ["--source-cookie", "not-the-cookie"]
    )
    with pytest.raises(ConnectorError, match="wrong cookie"):
        connector.connect(timeout=20)
    connector.close()
    assert source_status(control_port(args))["connectors_refused"] == 1


def test_back_pressure_and_acks_only_after_completed_checkpoints(workers):
    """With the receiver away the sink cannot write, so checkpoints cannot complete:
    the connector gets no ack at all, and the cluster takes only a bounded number of
    messages (credits and buffers) while the connector holds the rest. Once the receiver
    is up, everything arrives and is acknowledged."""
    from actorflow.experimental import SourceConnector

    out = Collector()  # not listening yet
    in_port = free_port()
    args = worker_args(
        in_port,
        out.port,
        "--time-between-checkpoints",
        "0.2",
        "--sink-buffer",
        "65536",
        "--batch-size",
        "100",
        "--window",
        "2",
        name="votes",
    )
    args += ["--max-credits", "200"]
    workers(args)
    connector = SourceConnector(args=["--application-module", APP, "--connector", "votes", *args])
    connector.connect(timeout=20)
    vs = votes(30_000, seed=3)
    writer = threading.Thread(target=lambda: [connector.write(f"{a} {n}") for a, n in vs])
    writer.daemon = True
    writer.start()
    try:
        taken = wait_until(lambda: (s := source_status(control_port(args)))["records_in"] > 0 and s)
        time.sleep(1.0)  # a bounded wait: the cluster must stay stalled meanwhile
        first = source_status(control_port(args))["records_in"]
        time.sleep(1.0)
        second = source_status(control_port(args))["records_in"]
        assert taken and second == first < len(vs) // 2, (first, second)
        assert connector.acked_point == 0, "an ack before any checkpoint completed"
        out.receiver.start()
        writer.join(60)
        assert connector.join(60), f"acked {connector.acked_point} of {len(vs)}"
        want = totals(vs)
        assert wait_until(lambda: final_totals(out.lines()) == want, 30)
        assert connector.acked_point == len(vs)
    finally:
        connector.close()
        out.receiver.stop()


def test_celsius_connectors_app_with_wallaroos_read_api(workers):
    """Wallaroo's celsius_connectors example (import lines changed): a source connector
    with 10 credits and a sink connector read with ``read()``."""
    import struct

    from actorflow.experimental import SinkConnector, SourceConnector

    in_port, out_port = free_port(), free_port()
    app = "actorflow.connectors.apps.celsius"
    args = worker_args(in_port, out_port, "--time-between-checkpoints", "0.2", name="celsius")
    base = ["--application-module", app, *args]
    sink = SinkConnector(args=[*base, "--connector", "fahrenheit_conversion"])
    sink.listen()
    w = WorkerProcess(app, args)
    w.start()
    try:
        w.wait_ready(60)
        source = SourceConnector(args=[*base, "--connector", "celsius_feed"])
        source.connect(timeout=20)
        readings = [float(c) for c in range(-40, 60)]
        for c in readings:
            source.write(struct.pack(">f", c))
        got = [sink.read(timeout=10) for _ in readings]
        assert got == [f"{c * 1.8 + 32}\n" for c in readings]
        assert source.join(20)
        source.close()
    finally:
        w.stop()
        sink.close()


def test_rabbitmq_source_acknowledges_deliveries_after_checkpoints(
    rabbitmq_server, workers, scripts, collector
):
    import pika

    queue = "votes"
    conn = pika.BlockingConnection(pika.URLParameters(rabbitmq_server.url))
    channel = conn.channel()
    channel.queue_declare(queue=queue, durable=True)
    vs = votes(5_000, seed=11)
    for letter, n in vs:
        channel.basic_publish("", queue, f"{letter} {n}".encode())
    args = worker_args(
        free_port(), collector.port, "--time-between-checkpoints", "0.2", name="votes"
    )
    workers(args)
    script = scripts(
        "rabbitmq_source", "votes", {"amqpurl": rabbitmq_server.url, "queue": queue}, args
    )
    script.wait_line("consuming")
    want = totals(vs)
    assert wait_until(lambda: final_totals(collector.lines()) == want, 30), "totals differ"

    # Every delivery was acknowledged to RabbitMQ once a checkpoint covered it: with the
    # connector gone (SIGKILL), nothing comes back to the queue.
    def settled():
        return channel.queue_declare(queue=queue, durable=True, passive=True)

    time.sleep(0.5)  # at least two checkpoints after the last output: the last acks
    script.proc.kill()
    script.proc.wait(10)
    assert wait_until(lambda: settled().method.consumer_count == 0, 10)
    assert settled().method.message_count == 0, "deliveries were left unacknowledged"
    assert len(collector.lines()) == len(vs)
    conn.close()


def test_postgres_table_source_resumes_after_a_connector_restart(
    postgres_server, workers, scripts, collector
):
    """The rows' ids are the points of reference: a killed connector restarted resumes
    right after the last row the cluster took, read again from the table. Half the rows
    come after the kill, so the restarted connector has rows to read whatever the first
    one got through."""
    import psycopg2

    dsn, table = postgres_server.dsn, "vote_rows"
    vs = votes(20_000, seed=5)
    first_half, second_half = vs[:10_000], vs[10_000:]

    def insert(rows):
        conn = psycopg2.connect(dsn)
        with conn, conn.cursor() as cur:
            cur.execute(
                f"CREATE TABLE IF NOT EXISTS {table} (id bigserial PRIMARY KEY, payload text)"
            )
            cur.executemany(
                f"INSERT INTO {table} (payload) VALUES (%s)", [(f"{a} {n}",) for a, n in rows]
            )
        conn.close()

    insert(first_half)
    args = worker_args(
        free_port(), collector.port, "--time-between-checkpoints", "0.2", name="votes"
    )
    workers(args)
    params = {"connection": dsn, "table": table, "poll": 0.01}
    first = scripts("postgres_source", "votes", params, args)
    first.wait_line("reading")
    assert wait_until(lambda: len(collector.lines()) >= 2_000, 30)
    first.proc.kill()
    first.proc.wait(10)
    insert(second_half)
    second = scripts("postgres_source", "votes", params, args)
    second.wait_line("reading")
    resumed = int(next(x for x in second.lines if "reading" in x).split()[-1])
    assert 0 < resumed <= len(first_half)
    want = totals(vs)
    assert wait_until(lambda: final_totals(collector.lines()) == want, 30)
    assert len(collector.lines()) == len(vs), "a row taken twice"


def test_udp_source_into_the_redis_hash_sink(redis_server, workers, scripts):
    import socket

    import redis

    totals_port, udp_port = free_port(), free_port()
    args = worker_args(
        free_port(),
        free_port(),
        "--time-between-checkpoints",
        "0.2",
        "--sink-connector-port",
        str(totals_port),
        name="votes",
    )
    sink = scripts("redis_sink", "totals", {"hash": "totals", "port": redis_server.port}, args)
    sink.wait_line("listening")
    workers(args)
    source = scripts("udp_source", "votes", {"host": "127.0.0.1", "port": udp_port}, args)
    source.wait_line("listening")
    vs = votes(3_000, seed=9)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for i, (letter, n) in enumerate(vs):
        sock.sendto(f"{letter} {n}".encode(), ("127.0.0.1", udp_port))
        if i % 100 == 99:
            time.sleep(0.002)  # UDP drops what overflows a buffer: pace it
    sock.close()
    client = redis.Redis("127.0.0.1", redis_server.port)
    want = {k: str(v) for k, v in totals(vs).items()}

    def in_redis():
        return {k.decode(): v.decode() for k, v in client.hgetall("totals").items()}

    assert wait_until(lambda: in_redis() == want, 30), (in_redis(), want, sink.lines, source.lines)
    assert client.hlen("actorflow:commits") == 1
    client.close()


def test_udp_source_into_the_udp_sink(workers, scripts):
    """Datagrams in, datagrams out: each committed total arrives as one datagram (at
    least once), and the last one per letter is the total of what was sent."""
    import ast
    import socket

    totals_port, udp_in = free_port(), free_port()
    out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    out.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)  # a checkpoint's burst
    out.bind(("127.0.0.1", 0))
    out.settimeout(0.2)
    got: list[bytes] = []
    reading = threading.Event()

    def receive() -> None:  # at once, so the kernel drops none of a burst
        while not reading.is_set():
            try:
                got.append(out.recv(65536))
            except TimeoutError:
                pass

    receiver = threading.Thread(target=receive, daemon=True)
    receiver.start()
    args = worker_args(
        free_port(),
        free_port(),
        "--time-between-checkpoints",
        "0.2",
        "--sink-connector-port",
        str(totals_port),
        name="votes",
    )
    sink = scripts("udp_sink", "totals", {"host": "127.0.0.1", "port": out.getsockname()[1]}, args)
    sink.wait_line("listening")
    workers(args)
    source = scripts("udp_source", "votes", {"host": "127.0.0.1", "port": udp_in}, args)
    source.wait_line("listening")
    vs = votes(1_000, seed=11)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for i, (letter, n) in enumerate(vs):
        sock.sendto(f"{letter} {n}".encode(), ("127.0.0.1", udp_in))
        if i % 100 == 99:
            time.sleep(0.002)  # UDP drops what overflows a buffer: pace it
    sock.close()
    want, last = totals(vs), {}

    def arrived() -> bool:
        for datagram in list(got):
            # The app's sink decoder gives a dict; the UDP sink sends its text.
            row = ast.literal_eval(datagram.decode())
            last[row["letter"]] = max(last.get(row["letter"], 0), row["total"])
        return last == want

    try:
        assert wait_until(arrived, 30), (last, want, sink.lines, source.lines)
    finally:
        reading.set()
        receiver.join(5)
        out.close()


def test_connector_event_times_place_records_in_windows(workers, collector):
    """Messages written with event times a second apart in 2020 (sent within
    milliseconds now) land in the windows of their event time, not of their arrival."""
    from actorflow.experimental import SourceConnector

    app = "actorflow.connectors.apps.windowed"
    args = worker_args(free_port(), collector.port, "--time-between-checkpoints", "0.2")
    w = WorkerProcess(app, args)
    w.start()
    try:
        w.wait_ready(60)
        source = SourceConnector(["--application-module", app, "--connector", "stamped", *args])
        source.connect(timeout=20)
        base = 1_577_836_800_000  # 2020-01-01 in ms: a whole second
        stamps = [base + 250 * i for i in range(40)]  # 10 windows of 4 records per letter
        for ms in stamps:
            for letter in "xy":
                source.write(f"{letter} {ms}".encode(), event_time=ms * 1_000_000)
        want = sorted(
            f"{letter} {base + 1000 * k} {base + 1000 * k + 750} 4"
            for letter in "xy"
            for k in range(10)
        )
        assert wait_until(lambda: len(collector.lines()) >= len(want), 30)
        assert sorted(collector.lines()) == want
        assert source.join(20)
        source.close()
    finally:
        w.stop()


class _StandIn:
    """Stands in for kafka-python (no broker here): a consumer of prepared records that
    keeps what the Kafka source commits."""

    def __init__(self, values: list[bytes]) -> None:
        import collections

        self.values = values
        self.committed: dict = {}
        self.stop = threading.Event()
        outer = self
        Record = collections.namedtuple("Record", "value key offset")
        TopicPartition = collections.namedtuple("TopicPartition", "topic partition")
        self.TopicPartition = TopicPartition
        self.OffsetAndMetadata = collections.namedtuple(
            "OffsetAndMetadata", "offset metadata leader_epoch"
        )

        class KafkaConsumer:
            def __init__(self, *topics, **config):
                assert config["enable_auto_commit"] is False
                self.next = 0

            def poll(self, timeout_ms=0):
                if outer.stop.is_set():
                    raise SystemExit
                batch = outer.values[self.next : self.next + 500]
                records = [Record(v, None, self.next + i) for i, v in enumerate(batch)]
                self.next += len(batch)
                if not records:
                    time.sleep(timeout_ms / 1000)
                    return {}
                return {TopicPartition("votes", 0): records}

            def commit(self, offsets):
                outer.committed.update({tp: om.offset for tp, om in offsets.items()})

        self.KafkaConsumer = KafkaConsumer


def test_kafka_source_logic_with_a_stand_in_client(workers, collector, monkeypatch):
    """The Kafka source script against a real worker, kafka-python replaced by a stand-in:
    every record arrives, and the offset committed to Kafka is one past the last record,
    only once a checkpoint acknowledged it."""
    import types

    from actorflow.connectors import kafka_source

    vs = votes(3_000, seed=13)
    fake = _StandIn([f"{a} {n}".encode() for a, n in vs])
    module = types.ModuleType("kafka")
    for name in ("KafkaConsumer", "TopicPartition", "OffsetAndMetadata"):
        setattr(module, name, getattr(fake, name))
    monkeypatch.setitem(sys.modules, "kafka", module)
    args = worker_args(
        free_port(), collector.port, "--time-between-checkpoints", "0.2", name="votes"
    )
    workers(args)
    monkeypatch.setattr(
        sys,
        "argv",
        ["kafka_source", "--application-module", APP, "--connector", "votes"]
        + ["--votes-topics", "votes", *args],
    )
    thread = threading.Thread(target=lambda: pytest.raises(SystemExit, kafka_source.run))
    thread.start()
    try:
        want = totals(vs)
        assert wait_until(lambda: final_totals(collector.lines()) == want, 30)
        tp = fake.TopicPartition("votes", 0)
        assert wait_until(lambda: fake.committed.get(tp) == len(vs), 10), fake.committed
    finally:
        fake.stop.set()
        thread.join(10)


def test_postgres_notify_source(postgres_server, workers, scripts, collector):
    import psycopg2

    args = worker_args(
        free_port(), collector.port, "--time-between-checkpoints", "0.2", name="votes"
    )
    workers(args)
    params = {"connection": postgres_server.dsn, "channel": "votes"}
    script = scripts("postgres_source", "votes", params, args)
    script.wait_line("listening on votes")
    vs = votes(2_000, seed=17)
    conn = psycopg2.connect(postgres_server.dsn)
    conn.autocommit = True
    with conn.cursor() as cur:
        for letter, n in vs:
            cur.execute("SELECT pg_notify('votes', %s)", (f"{letter} {n}",))
    conn.close()
    want = totals(vs)
    assert wait_until(lambda: final_totals(collector.lines()) == want, 30)
    assert len(collector.lines()) == len(vs)
