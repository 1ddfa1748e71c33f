"""Processes the scale-out tests start themselves: Redis with Sentinel, PgBouncer, nginx,
`agentflow serve` and `agentflow beat`, a fresh Postgres database. Every one listens on a
free port of 127.0.0.1 and keeps its files in a temp directory; none needs root.

A missing binary or service fails the test (tests/needs.py: it never skips outside
`make test-fast`): these tests are the proof that AgentFlow runs on more than one machine.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

import httpx

from tests.databases import create_database, drop_database
from tests.needs import missing

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def binary(name: str, *candidates: str) -> str:
    for path in (shutil.which(name), *candidates):
        if path and os.access(path, os.X_OK):
            return path
    missing(f"{name} is not installed (apt-get install -y {name}); the scale-out tests start their own")


def writer_reviewer_spec(workflow_id: str, name: str, queue: dict | None = None) -> dict:
    """input -> writer (llm) -> reviewer (llm), each prompt tagged `run=<metadata.n> step=<node>`
    so the test server can count calls per run and step; both LLM nodes on `queue` if given."""
    llm = {"source": "gpt", **({"queue": queue["id"]} if queue else {})}
    return {
        "id": workflow_id, "name": name, "start_node": "input",
        "nodes": [
            {"id": "input", "type": "input"},
            {"id": "writer", "type": "llm", **llm,
             "config": {"prompt": "run={metadata.n} step=writer {user_input}", "output_key": "draft",
                        "max_tokens": 20}},
            {"id": "reviewer", "type": "llm", **llm,
             "config": {"prompt": "run={metadata.n} step=reviewer {draft}", "output_key": "text_result",
                        "max_tokens": 20}},
        ],
        "edges": [{"from": "input", "to": "writer"}, {"from": "writer", "to": "reviewer"}],
        **({"queues": [queue]} if queue else {}),
        "sources": [{"id": "gpt", "kind": "llm", "provider": "openai", "model": "gpt-4o-mini",
                     "api_key_env": "OPENAI_API_KEY", "base_url_env": "OPENAI_BASE_URL"}],
    }


def wait_until(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception as exc:  # not up yet
            last = exc
        time.sleep(interval)
    raise TimeoutError(f"{what} within {timeout:g} s" + (f" (last error: {last})" if last else ""))


class Proc:
    """One process in its own session, its output in `log`."""

    def __init__(self, name: str, argv: list[str], log: Path, env: dict | None = None, cwd: Path | None = None):
        self.name, self.log = name, log
        self._out = open(log, "ab")
        self.popen = subprocess.Popen(argv, env=env, cwd=cwd, stdout=self._out, stderr=subprocess.STDOUT,
                                      start_new_session=True)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        try:
            os.killpg(self.popen.pid, sig)
        except ProcessLookupError:
            pass
        try:
            self.popen.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(timeout=10)

    def stop(self) -> None:
        if self.alive():
            self.kill(signal.SIGTERM)
        self._out.close()

    def tail(self, n: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-n:]


# ---------------------------------------------------------------- Postgres


class FreshDatabase:
    """A new database on the local Postgres, not migrated (a test migrates it its own way:
    through PgBouncer, say); dropped by `drop`."""

    def __init__(self):
        self.url = create_database("af_scale_", "the scale-out tests create a database of their own")
        u = urlsplit(self.url)
        self.name = u.path.lstrip("/")
        self.user, self.host, self.port = u.username or "postgres", u.hostname or "127.0.0.1", u.port or 5432

    def drop(self) -> None:
        drop_database(self.url)


# ---------------------------------------------------------------- Redis + Sentinel


class SentinelRedis:
    """A master, a replica and three sentinels (quorum 2), failover in about 2 s."""

    MASTER = "afmaster"

    def __init__(self, root: Path, down_after_ms: int = 1000, failover_timeout_ms: int = 4000):
        self.root = root
        self.server = binary("redis-server", "/usr/bin/redis-server")
        self.master_port, self.replica_port = free_port(), free_port()
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.procs: dict[str, Proc] = {}
        self._redis("master", self.master_port)
        self._redis("replica", self.replica_port, "--replicaof", "127.0.0.1", str(self.master_port))
        for i, port in enumerate(self.sentinel_ports):
            d = root / f"sentinel{i}"
            d.mkdir()
            conf = d / "sentinel.conf"  # sentinel rewrites its config: it must be its own, writable
            conf.write_text(f"port {port}\nbind 127.0.0.1\ndir {d}\n"
                            f"sentinel monitor {self.MASTER} 127.0.0.1 {self.master_port} 2\n"
                            f"sentinel down-after-milliseconds {self.MASTER} {down_after_ms}\n"
                            f"sentinel failover-timeout {self.MASTER} {failover_timeout_ms}\n"
                            f"sentinel parallel-syncs {self.MASTER} 1\n")
            self.procs[f"sentinel{i}"] = Proc(f"sentinel{i}", [self.server, str(conf), "--sentinel"],
                                              d / "out.log")
        self.wait_ready()

    def _redis(self, name: str, port: int, *extra: str) -> None:
        d = self.root / name
        d.mkdir()
        self.procs[name] = Proc(name, [self.server, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(d),
                                       "--save", "", "--appendonly", "no", *extra], d / "out.log")

    @property
    def sentinels(self) -> str:
        return ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)

    def env(self) -> dict[str, str]:
        return {"REDIS_SENTINELS": self.sentinels, "REDIS_SENTINEL_MASTER": self.MASTER}

    def sentinel_client(self, i: int = 0):
        import redis

        return redis.Redis(port=self.sentinel_ports[i], socket_timeout=2, decode_responses=True)

    def master_address(self) -> tuple[str, int]:
        host, port = self.sentinel_client().execute_command("SENTINEL", "get-master-addr-by-name", self.MASTER)
        return host, int(port)

    def wait_ready(self, timeout: float = 30) -> None:
        """Until the replica is in sync and every sentinel knows the replica and the other
        two sentinels (without that, no failover can be agreed)."""
        import redis

        def ready() -> bool:
            for name, proc in self.procs.items():
                if not proc.alive():
                    raise RuntimeError(f"{name} exited: {proc.tail()}")
            info = redis.Redis(port=self.replica_port, socket_timeout=1).info("replication")
            if info.get("master_link_status") != "up":
                return False
            for i in range(3):
                s = self.sentinel_client(i)
                if len(s.execute_command("SENTINEL", "replicas", self.MASTER)) < 1:
                    return False
                if len(s.execute_command("SENTINEL", "sentinels", self.MASTER)) < 2:
                    return False
            return True

        wait_until(ready, timeout, "Redis master, replica and three sentinels ready")

    def kill_master(self) -> None:
        self.procs["master"].kill(signal.SIGKILL)

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.stop()


# ---------------------------------------------------------------- AgentFlow processes


def agentflow(*args: str) -> list[str]:
    return [sys.executable, "-m", "agentflow.cli", *args]


class Api(Proc):
    """`agentflow serve` on a free port."""

    def __init__(self, name: str, env: dict, logdir: Path, port: int | None = None):
        self.port = port or free_port()
        super().__init__(name, agentflow("serve", "--port", str(self.port)), logdir / f"{name}.log", env=env)
        self.url = f"http://127.0.0.1:{self.port}"

    def wait_healthy(self, timeout: float = 60) -> "Api":
        def up() -> bool:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited: {self.tail()}")
            return httpx.get(self.url + "/health", timeout=2).status_code == 200

        wait_until(up, timeout, f"{self.name} answering /health", interval=0.3)
        return self


def beat(env: dict, logdir: Path) -> Proc:
    return Proc("beat", agentflow("beat", "--log-level", "warning"), logdir / "beat.log", env=env)


def token(env: dict, tenant: str = "default", role: str = "admin") -> str:
    return subprocess.run(agentflow("token", "create", "--tenant", tenant, "--role", role, "--ttl", "3600"),
                          env=env, capture_output=True, text=True, check=True).stdout.strip()


def stop_everything(workers, procs: list, *others) -> None:
    """Tear a test stack down: workers first (they hold runs), then the processes in reverse
    order of start, then `others` (objects with stop(), or a FreshDatabase: dropped)."""
    if workers is not None:
        workers.stop_all()
    for proc in reversed(procs):
        proc.stop()
    for other in others:
        other.drop() if isinstance(other, FreshDatabase) else other.stop()


def base_env(home: Path, **extra: str) -> dict[str, str]:
    """This environment without any Redis or database settings of the caller's, plus `extra`."""
    drop = ("REDIS_URL", "REDIS_SENTINELS", "REDIS_SENTINEL_MASTER", "REDIS_DB", "REDIS_PASSWORD", "DATABASE_URL",
            "AGENTFLOW_DB_POOLER", "AGENTFLOW_TRUSTED_PROXIES")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(AGENTFLOW_HOME=str(home), PYTHONUNBUFFERED="1", AGENTFLOW_JWT_SECRET="scale-test-" + "s" * 32)
    env.update(extra)
    return env


def plain_redis(root: Path) -> tuple[Proc, str]:
    """A private redis-server on a free port: (process, REDIS_URL)."""
    port = free_port()
    d = root / "redis"
    d.mkdir()
    proc = Proc("redis", [binary("redis-server", "/usr/bin/redis-server"), "--port", str(port), "--bind", "127.0.0.1",
                          "--dir", str(d), "--save", "", "--appendonly", "no"], d / "out.log")
    import redis

    wait_until(lambda: redis.Redis(port=port, socket_timeout=1).ping(), 20, "redis-server answering")
    return proc, f"redis://127.0.0.1:{port}/0"


class PgBouncer(Proc):
    """PgBouncer in transaction pooling mode in front of the local Postgres: few server
    connections shared by every client, one transaction at a time."""

    def __init__(self, root: Path, db: FreshDatabase, pool_size: int = 6):
        self.port = free_port()
        argv = [binary("pgbouncer", "/usr/sbin/pgbouncer")]
        if os.geteuid() == 0:
            # PgBouncer refuses to run as root: it drops to `nobody` (-u), so its files live
            # in a directory of nobody's own, outside root's private temp tree
            import pwd
            import tempfile

            nobody = pwd.getpwnam("nobody")
            d = Path(tempfile.mkdtemp(prefix="af-pgbouncer-"))
            os.chown(d, nobody.pw_uid, nobody.pw_gid)
            argv += ["-u", "nobody"]
        else:
            d = root / "pgbouncer"
            d.mkdir()
        self.dir = d
        users = {db.user, "postgres"}
        (d / "userlist.txt").write_text("".join(f'"{u}" ""\n' for u in sorted(users)))
        ini = d / "pgbouncer.ini"
        ini.write_text(f"""[databases]
{db.name} = host={db.host} port={db.port} dbname={db.name}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir =
auth_type = trust
auth_file = {d / 'userlist.txt'}
admin_users = {db.user}
pool_mode = transaction
default_pool_size = {pool_size}
max_client_conn = 1000
ignore_startup_parameters = extra_float_digits
logfile = {d / 'pgbouncer.log'}
pidfile = {d / 'pgbouncer.pid'}
""")
        super().__init__("pgbouncer", [*argv, str(ini)], root / "pgbouncer.out.log")
        self.url = f"postgresql://{db.user}@127.0.0.1:{self.port}/{db.name}"
        self.admin_url = f"postgresql://{db.user}@127.0.0.1:{self.port}/pgbouncer"
        import psycopg

        def up() -> bool:
            if not self.alive():
                raise RuntimeError(f"pgbouncer exited: {self.tail()}")
            with psycopg.connect(self.url, connect_timeout=2, prepare_threshold=None) as conn:
                return conn.execute("SELECT 1").fetchone() == (1,)

        wait_until(up, 20, "pgbouncer passing a query through")

    def stop(self) -> None:
        super().stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def show(self, what: str) -> list[dict]:
        """The admin console's SHOW <what> (POOLS, STATS, SERVERS...) as dicts."""
        import psycopg
        from psycopg.rows import dict_row

        with psycopg.connect(self.admin_url, autocommit=True, prepare_threshold=None, row_factory=dict_row) as conn:
            return conn.execute(f"SHOW {what}").fetchall()


class Nginx(Proc):
    """nginx with the shipped deploy/nginx/agentflow.conf, its upstream servers and listen
    port replaced, everything else as shipped; its files in `root` (no root needed)."""

    SHIPPED = REPO / "deploy" / "nginx" / "agentflow.conf"

    def __init__(self, root: Path, upstreams: list[int]):
        import re

        self.port = free_port()
        d = root / "nginx"
        d.mkdir()
        conf = self.SHIPPED.read_text()
        servers = "".join(f"    server 127.0.0.1:{p} max_fails=1 fail_timeout=5s;\n" for p in upstreams)
        conf, n = re.subn(r"(?m)^    server \S+:\d+ [^\n]*\n(?:    server \S+:\d+ [^\n]*\n)*", servers, conf, count=1)
        assert n == 1, "the shipped config has no upstream server lines to replace"
        conf, n = re.subn(r"(?m)^    listen \d+;", f"    listen 127.0.0.1:{self.port};", conf)
        assert n == 1, "the shipped config has no `listen <port>;` line to replace"
        (d / "agentflow.conf").write_text(conf)
        temp = "".join(f"    {k}_temp_path {d / k};\n" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        (d / "nginx.conf").write_text(
            ("user root;\n" if os.geteuid() == 0 else "")
            + f"worker_processes 1;\npid {d / 'nginx.pid'};\nerror_log {d / 'error.log'} info;\n"
            "events { worker_connections 1024; }\n"
            "http {\n"
            "    log_format upstream '$request_method $request_uri $status $upstream_addr $upstream_status';\n"
            f"    access_log {d / 'access.log'} upstream;\n{temp}"
            f"    include {d / 'agentflow.conf'};\n}}\n")
        self.access_log = d / "access.log"
        nginx = binary("nginx", "/usr/sbin/nginx")
        check = subprocess.run([nginx, "-t", "-p", str(d), "-c", str(d / "nginx.conf")], capture_output=True, text=True)
        assert check.returncode == 0, check.stderr
        super().__init__("nginx", [nginx, "-p", str(d), "-c", str(d / "nginx.conf"), "-g", "daemon off;"],
                         d / "out.log")
        self.url = f"http://127.0.0.1:{self.port}"

        def up() -> bool:
            if not self.alive():
                raise RuntimeError(f"nginx exited: {self.tail()} {(d / 'error.log').read_text()[-2000:]}")
            return httpx.get(self.url + "/health", timeout=2).status_code == 200

        wait_until(up, 20, "nginx proxying /health")

    def upstreams_seen(self) -> list[str]:
        """The upstream address of each logged request (first try), in order."""
        rows = [line.split() for line in self.access_log.read_text().splitlines()]
        return [row[3].split(",")[0] for row in rows if len(row) > 3]
