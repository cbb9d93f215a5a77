"""Several hosts on one machine: Linux network namespaces joined by veth pairs.

Each host is a namespace with its own address on 10.231.0.0/24 and its own
loopback; traffic goes only to those addresses. Made and removed by the tests
(root needed: they skip with the reason otherwise).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence

import pytest

from actorflow.processes import die_with_parent


def _ip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)


class Hosts:
    """Two hosts ``a`` (10.231.0.1) and ``b`` (10.231.0.2), linked by one veth pair."""

    def __init__(self) -> None:
        tag = f"{os.getpid() % 100000}"
        self.names = [f"afa{tag}", f"afb{tag}"]
        self.links = [f"afa{tag}", f"afb{tag}"]  # one end of the pair in each namespace
        self.addresses = ["10.231.0.1", "10.231.0.2"]
        self.made: list[str] = []

    def create(self) -> Hosts:
        if shutil.which("ip") is None:
            pytest.skip("the ip command (iproute2) is not installed")
        for name in self.names:
            r = _ip("netns", "add", name)
            if r.returncode != 0:
                self.remove()
                pytest.skip(f"cannot make network namespaces here: {r.stderr.strip()}")
            self.made.append(name)
        steps = [
            ("link", "add", self.links[0], "type", "veth", "peer", "name", self.links[1]),
            ("link", "set", self.links[0], "netns", self.names[0]),
            ("link", "set", self.links[1], "netns", self.names[1]),
        ]
        for i in range(2):
            n, link, addr = self.names[i], self.links[i], self.addresses[i]
            steps += [
                ("-n", n, "addr", "add", f"{addr}/24", "dev", link),
                ("-n", n, "link", "set", link, "up"),
                ("-n", n, "link", "set", "lo", "up"),
            ]
        for step in steps:
            r = _ip(*step)
            if r.returncode != 0:
                self.remove()
                pytest.fail(f"ip {' '.join(step)}: {r.stderr.strip()}")
        return self

    def exec(self, i: int) -> list[str]:
        """The prefix that runs a command on host i."""
        return ["ip", "netns", "exec", self.names[i]]

    def cut(self) -> None:
        """Take the link between the hosts down (both ends)."""
        for i in range(2):
            _ip("-n", self.names[i], "link", "set", self.links[i], "down")

    def heal(self) -> None:
        for i in range(2):
            _ip("-n", self.names[i], "link", "set", self.links[i], "up")

    def listening(self, i: int) -> list[tuple[str, int]]:
        """Every TCP listening socket on host i: (address, port)."""
        out = subprocess.run(
            [*self.exec(i), "ss", "-Hltn"], capture_output=True, text=True, timeout=10
        ).stdout
        found = []
        for line in out.splitlines():
            local = line.split()[3]
            host, _, port = local.rpartition(":")
            found.append((host.strip("[]"), int(port)))
        return found

    def popen(self, i: int, args: Sequence[str], **kw) -> subprocess.Popen:
        """A child process on host i (it dies with the test process)."""
        return subprocess.Popen(
            [*self.exec(i), sys.executable, "-m", "actorflow", *args],
            stdin=subprocess.DEVNULL,
            preexec_fn=die_with_parent,
            **kw,
        )

    def remove(self) -> None:
        for name in self.made:
            _ip("netns", "del", name)
        self.made = []
