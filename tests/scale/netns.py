"""Separate "hosts" on this machine: network namespaces on a private bridge.

    with Hosts(["hostA", "hostB"]) as net:    # needs root and iproute2; fails the test otherwise
        net.gateway                           # the services' address, on the bridge (root namespace)
        net.argv("hostA", [...])              # a command run inside hostA, with hostname hostA
        net.cut("hostA") / net.restore("hostA")

Each host is a namespace with one veth link to a bridge in the root namespace, which holds
the gateway address (10.211.N.1). Services bind to that address (and 127.0.0.1 for the test
itself); a host reaches nothing else. `cut` sets the host's bridge port down: a real
partition, its packets vanish, its TCP connections hang (no RST), and nothing on the host
notices except by timeouts. Every link, the bridge and the namespaces go in `close`, which
also runs when setting up failed half-way.

`Forwarder` brings a service that listens on 127.0.0.1 only (the machine's Postgres) to the
gateway address, without reconfiguring it.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import subprocess
import threading
import uuid

import pytest


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


class Hosts:
    def __init__(self, names: list[str]):
        if os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("unshare") is None:
            # not `missing()`: this test must never skip, not even in `make test-fast`
            pytest.fail("the vanished-host test needs root, iproute2 (`ip`) and util-linux (`unshare`) to create "
                        "network namespaces", pytrace=False)
        self.tag = uuid.uuid4().hex[:5]
        self.names = names
        self.bridge = f"af{self.tag}br"
        self.ns = {name: f"af{self.tag}-{name}" for name in names}
        self.port = {name: f"af{self.tag}{i}r" for i, name in enumerate(names)}  # root side, on the bridge
        self._created: list[tuple[str, str]] = []
        net = self._free_subnet()
        self.gateway = f"{net}.1"
        self.address = {name: f"{net}.{i + 2}" for i, name in enumerate(names)}
        try:
            self._build()
        except BaseException as exc:
            self.close()
            if isinstance(exc, subprocess.CalledProcessError):
                pytest.fail(f"could not create network namespaces: `{' '.join(exc.cmd)}`: {exc.stderr.strip()}",
                            pytrace=False)
            raise

    @staticmethod
    def _free_subnet() -> str:
        used = _ip("-o", "-4", "addr").stdout
        for _ in range(50):
            net = f"10.211.{random.randint(16, 250)}"
            if f" {net}." not in used:
                return net
        raise RuntimeError("no free 10.211.N.0/24 subnet")

    def _build(self) -> None:
        _ip("link", "add", self.bridge, "type", "bridge")
        self._created.append(("link", self.bridge))
        _ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for i, name in enumerate(self.names):
            ns, port, inner = self.ns[name], self.port[name], f"af{self.tag}{i}h"
            _ip("netns", "add", ns)
            self._created.append(("netns", ns))
            _ip("link", "add", port, "type", "veth", "peer", "name", inner)
            self._created.append(("link", port))
            _ip("link", "set", inner, "netns", ns)
            _ip("link", "set", port, "master", self.bridge)
            _ip("link", "set", port, "up")
            _ip("-n", ns, "addr", "add", f"{self.address[name]}/24", "dev", inner)
            _ip("-n", ns, "link", "set", inner, "up")
            _ip("-n", ns, "link", "set", "lo", "up")

    def argv(self, name: str, command: list[str]) -> list[str]:
        """`command` run in host `name`'s namespace, with its own hostname (a UTS namespace):
        `socket.gethostname()` there says `name`, as on a machine of its own."""
        return ["ip", "netns", "exec", self.ns[name], "unshare", "--uts", "sh", "-c",
                f'hostname {name} && exec "$@"', "sh", *command]

    def cut(self, name: str) -> None:
        _ip("link", "set", self.port[name], "down")

    def restore(self, name: str) -> None:
        _ip("link", "set", self.port[name], "up")

    def close(self) -> None:
        """Remove what was created, newest first; deleting a namespace or a veth end takes
        its peer along. Processes inside must have been stopped first."""
        for kind, what in reversed(self._created):
            if kind == "netns":
                _ip("netns", "del", what, check=False)
            else:
                _ip("link", "del", what, check=False)
        self._created.clear()

    def __enter__(self) -> "Hosts":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Forwarder:
    """A TCP forwarder in a thread: connections to (host, port) are piped to `target`."""

    def __init__(self, host: str, target: tuple[str, int]):
        self.host, self.target = host, target
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True, name=f"forward:{target}")
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, host, 0), self.loop).result(10)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _handle(self, reader, writer) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return

        async def pipe(src, dst) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except OSError:
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def stop(self) -> None:
        async def shut() -> None:
            self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        try:
            asyncio.run_coroutine_threadsafe(shut(), self.loop).result(10)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
