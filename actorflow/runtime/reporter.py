"""The metrics reporter: one per worker started with ``--metrics``.

Placed actors send it their figures once per interval; it sends one report frame to
the metrics hub (see actorflow.metrics.report). Sending never blocks: the socket is
non-blocking, and a report that cannot go out at once (hub down, buffer full) is
dropped and counted.
"""

from __future__ import annotations

import errno
import logging
import socket
import time
from datetime import timedelta
from typing import Any

from thespian.actors import ActorExitRequest, WakeupMessage

from actorflow.messages import (
    ClusterFigures,
    Retire,
    Retired,
    StageReport,
    StageStatus,
    StartReporting,
    StatusQuery,
)
from actorflow.metrics.report import Histogram, encode_report
from actorflow.runtime.stage import PlacedActor

log = logging.getLogger("actorflow.metrics")


class MetricsReporter(PlacedActor):
    """Collects this worker's stage reports and sends them to the hub."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.config: StartReporting | None = None
        self.sock: socket.socket | None = None
        self.connecting = False
        self.steps: dict[str, dict] = {}
        self.pipeline = Histogram()
        self.dropped = 0
        self.sent = 0
        self.warned = False
        self.next_connect = 0.0
        self.cluster: dict | None = None  # the initializer's: rescale figures

    def receiveMessage(self, msg: Any, sender: Any) -> None:  # noqa: N802
        if isinstance(msg, StageReport):
            self.steps[msg.stage_id] = msg.step
            if msg.pipeline_latency:
                self.pipeline.merge(Histogram.from_wire(msg.pipeline_latency))
        elif isinstance(msg, WakeupMessage) and self.config is not None:
            self.report()
            self.wakeupAfter(timedelta(seconds=self.config.interval))
        elif isinstance(msg, ClusterFigures):
            self.cluster = dict(msg.figures)
        elif isinstance(msg, StartReporting):
            self.config = msg
            self.cluster = msg.cluster
            self.wakeupAfter(timedelta(seconds=msg.interval))
        elif isinstance(msg, StatusQuery):
            worker = self.config.worker if self.config else "?"
            figures = {"reports_sent": self.sent, "reports_dropped": self.dropped}
            self.send(sender, StageStatus("reporter", worker, "reporter", figures))
        elif isinstance(msg, Retire | ActorExitRequest):
            worker = self.config.worker if self.config else "?"
            if self.sock is not None:
                self.sock.close()
                self.sock = None
            self.config = None
            if isinstance(msg, Retire):
                self.send(sender, Retired("reporter", worker))
                self.send(self.myAddress, ActorExitRequest())

    def connect(self) -> None:
        """Start a non-blocking connect; it completes in a later interval."""
        assert self.config is not None
        if time.monotonic() < self.next_connect:
            return
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        code = sock.connect_ex(self.config.address)
        if code not in (0, errno.EINPROGRESS):
            sock.close()
            self.next_connect = time.monotonic() + 2.0
            return
        self.sock, self.connecting = sock, code != 0

    def report(self) -> None:
        assert self.config is not None
        frame = encode_report(
            {
                "v": 1,
                "app": self.config.app,
                "worker": self.config.worker,
                "time": time.time(),
                "interval": self.config.interval,
                "steps": list(self.steps.values()),
                "pipelines": [{"name": self.config.app, "latency": self.pipeline.take()}],
                "dropped_reports": self.dropped,
                **({"cluster": self.cluster} if self.cluster is not None else {}),
            }
        )
        if self.sock is None:
            self.connect()
        if self.sock is not None and self.connecting:
            err = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err == 0:
                try:
                    self.sock.getpeername()
                    self.connecting = False
                except OSError:
                    pass  # still connecting
            else:
                self.drop_connection(errno.errorcode.get(err, str(err)))
        if self.sock is None or self.connecting:
            self.dropped += 1
            return
        try:
            n = self.sock.send(frame)
        except (BlockingIOError, InterruptedError):
            n = 0
        except OSError as exc:
            self.drop_connection(str(exc))
            self.dropped += 1
            return
        if n < len(frame):  # a torn frame would corrupt the stream: start afresh
            self.drop_connection("the hub does not keep up")
            self.dropped += 1
            return
        self.sent += 1
        if self.warned:
            log.info("metrics: reporting to %s:%d again", *self.config.address)
            self.warned = False

    def drop_connection(self, why: str) -> None:
        if self.sock is not None:
            self.sock.close()
        self.sock, self.connecting = None, False
        self.next_connect = time.monotonic() + 2.0
        if not self.warned and self.config is not None:
            log.warning(
                "metrics: hub at %s:%d unreachable (%s); reports are dropped and "
                "counted until it is back",
                *self.config.address,
                why,
            )
            self.warned = True
