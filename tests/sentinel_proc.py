"""A private Redis Sentinel deployment for tests: one primary, one replica, three Sentinels, all on 127.0.0.1.

Debian's ``redis-server --sentinel`` is the Sentinel; every process gets a free port and its own config file (a
Sentinel rewrites its config), so tests never touch the machine's shared Redis. Timings are shortened (the primary
is judged down after 400 ms) so a failover completes within a couple of seconds.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.conftest import free_port
from tests.redis_proc import RedisProc, wait_until

MASTER = "mymaster"


class SentinelGroup:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        # A full sync writes an RDB file even without persistence: keep it in the test's folder.  It starts at once
        # (Redis 7 waits 5 s by default for more replicas to share a diskless sync; there is only ever one here).
        self.server_args = ("--dir", str(folder), "--repl-diskless-sync-delay", "0")
        self.primary = RedisProc(None, *self.server_args)
        self.replica = RedisProc(None, *self.server_args)
        self.sentinel_ports = [free_port() for _ in range(3)]
        # Each Sentinel's run id, written into the others' configs below as a known peer.
        self.sentinel_ids = [secrets.token_hex(20) for _ in self.sentinel_ports]
        self.sentinels: list[subprocess.Popen[bytes]] = []

    @property
    def addrs(self) -> list[str]:
        return [f"127.0.0.1:{p}" for p in self.sentinel_ports]

    def start(self) -> None:
        self.primary.start()
        self.replica.extra = (*self.server_args, "--replicaof", "127.0.0.1", str(self.primary.port))
        self.replica.start()
        self._wait(lambda: self._link_up(self.replica), 10, "the replica to sync")
        exe = shutil.which("redis-server")
        assert exe is not None
        for port, myid in zip(self.sentinel_ports, self.sentinel_ids, strict=True):
            # The replica and the other Sentinels are written in as known, as a Sentinel writes them into its own
            # config once it has discovered them: discovery alone takes up to 10 s (the primary's INFO period).
            peers = "".join(
                f"sentinel known-sentinel {MASTER} 127.0.0.1 {p} {i}\n"
                for p, i in zip(self.sentinel_ports, self.sentinel_ids, strict=True)
                if p != port
            )
            conf = self.folder / f"sentinel-{port}.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {self.folder}\nsentinel myid {myid}\n"
                f"sentinel monitor {MASTER} 127.0.0.1 {self.primary.port} 2\n"
                f"sentinel down-after-milliseconds {MASTER} 400\n"
                f"sentinel failover-timeout {MASTER} 3000\n"
                f"sentinel parallel-syncs {MASTER} 1\n"
                f"sentinel known-replica {MASTER} 127.0.0.1 {self.replica.port}\n{peers}",
                encoding="utf-8",
            )
            proc = subprocess.Popen(
                [exe, str(conf), "--sentinel"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            self.sentinels.append(proc)
        # A Sentinel learns of the replica from the primary's INFO, which it reads every 10 s (fixed in Redis), and
        # of the other Sentinels from their hello messages every 2 s: 15 s left too little on a slow, busy CI machine
        # (seen: a clean-clone run timed out here).  Setup only; every check of the tests themselves is unchanged.
        self._wait(self._sentinels_agree, 30, "three Sentinels to see the primary and its replica")

    def stop(self) -> None:
        for p in self.sentinels:
            p.terminate()
        for p in self.sentinels:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)
        self.sentinels = []
        self.replica.stop()
        self.primary.stop()

    def sentinel_client(self, i: int = 0) -> redis.Redis:
        return redis.Redis(
            host="127.0.0.1",
            port=self.sentinel_ports[i],
            socket_timeout=2,
            socket_connect_timeout=2,
            retry=Retry(NoBackoff(), 0),
            decode_responses=True,
        )

    def master_port(self) -> int | None:
        for i in range(len(self.sentinel_ports)):
            c = self.sentinel_client(i)
            try:
                host_port = c.execute_command("SENTINEL", "get-master-addr-by-name", MASTER)
                return int(host_port[1])
            except (redis.RedisError, TypeError, IndexError):
                continue
            finally:
                c.close()
        return None

    def failover(self) -> None:
        """A planned failover (``SENTINEL FAILOVER``): the replica is promoted."""
        old = self.master_port()
        c = self.sentinel_client()
        try:
            c.execute_command("SENTINEL", "FAILOVER", MASTER)
        finally:
            c.close()
        self._wait(lambda: self.master_port() not in (None, old), 15, "the Sentinels to promote the replica")

    def kill_primary(self) -> int:
        """SIGKILL of whichever server is the primary now; returns its port."""
        port = self.master_port()
        victim = self.primary if port == self.primary.port else self.replica
        assert victim.proc is not None
        victim.proc.kill()
        victim.proc.wait(timeout=5)
        victim.proc = None
        return victim.port

    def restart(self, port: int) -> None:
        """Start the killed server again, empty: the Sentinels turn it into a replica of the new master."""
        server = self.primary if port == self.primary.port else self.replica
        server.extra = self.server_args
        server.start()
        self.wait_replica_linked()

    def wait_replica_linked(self, timeout_s: float = 45) -> None:
        """Until the server that is not the master replicates from it again. Sentinel converts a former master
        only after it has seen it report the wrong role for a while (about ten seconds at the default INFO period)."""

        def linked() -> bool:
            master = self.master_port()
            others = [s for s in (self.primary, self.replica) if s.port != master and s.proc is not None]
            return bool(others) and all(self._link_up(s) for s in others)

        self._wait(linked, timeout_s, "the former master to rejoin as a replica")

    def wait_new_master(self, old_port: int, timeout_s: float = 20) -> int:
        self._wait(lambda: self.master_port() not in (None, old_port), timeout_s, "a new master after the kill")
        port = self.master_port()
        assert port is not None
        return port

    def _link_up(self, server: RedisProc) -> bool:
        c = server.client()
        try:
            info = c.info("replication")
            return info.get("master_link_status") == "up"
        except redis.RedisError:
            return False
        finally:
            c.close()

    def _sentinels_agree(self) -> bool:
        """Every Sentinel sees the primary up, the replica linked, and both other Sentinels answering.

        Known peers come from the config at once, so their mere count proves nothing: a peer whose port was not yet
        open at the first try stays ``disconnected`` until the next reconnect (up to 1 s later), and a failover
        asked for in that second could miss its majority.
        """
        for i, proc in enumerate(self.sentinels):
            if proc.poll() is not None:
                pytest.fail(f"Sentinel on port {self.sentinel_ports[i]} exited ({proc.returncode}) during setup")
        views = self._views()
        return len(views) == 3 and all(_ready(v) for v in views)

    def _views(self) -> list[tuple[dict[str, str], list[dict[str, str]], list[dict[str, str]]]]:
        """Each answering Sentinel's view of the primary, its replicas and its peers."""
        views = []
        for i in range(3):
            c = self.sentinel_client(i)
            try:
                master = _fields(c.execute_command("SENTINEL", "master", MASTER))
                replicas = [_fields(r) for r in c.execute_command("SENTINEL", "replicas", MASTER)]
                peers = [_fields(r) for r in c.execute_command("SENTINEL", "sentinels", MASTER)]
            except redis.RedisError:
                continue
            finally:
                c.close()
            views.append((master, replicas, peers))
        return views

    def _wait(self, pred: object, timeout_s: float, what: str) -> None:
        """Every 50 ms: each look opens connections to the servers.  A timeout says what each Sentinel saw."""
        try:
            wait_until(pred, timeout_s, f"{what} (sentinel setup)", every_s=0.05)
        except pytest.fail.Exception as e:
            views = [(m.get("flags"), [(r.get("port"), r.get("flags"), r.get("master-link-status")) for r in rs],
                      [(p.get("port"), p.get("flags"), p.get("last-hello-message")) for p in ps])
                     for m, rs, ps in self._views()]  # fmt: skip
            pytest.fail(f"{e}; Sentinels saw (primary flags, replicas, peers): {views}")


def _ready(view: tuple[dict[str, str], list[dict[str, str]], list[dict[str, str]]]) -> bool:
    """One Sentinel's view is ready: primary not judged down, a linked replica, two connected peers.

    A peer's ``s_down`` is not held against it: with the 400 ms down-after, a busy machine makes it flap, and it
    clears at the peer's next reply; ``disconnected`` means no link yet.
    """
    master, replicas, peers = view

    def flags(d: dict[str, str]) -> set[str]:
        return set(d.get("flags", "").split(","))

    if flags(master) & {"s_down", "o_down", "disconnected"}:
        return False
    if not any(r.get("master-link-status") == "ok" and "disconnected" not in flags(r) for r in replicas):
        return False
    return sum("disconnected" not in flags(p) for p in peers) >= 2


def _fields(reply: object) -> dict[str, str]:
    """A Sentinel reply as a dict (RESP2 gives a flat list of names and values)."""
    if isinstance(reply, dict):
        return {str(k): str(v) for k, v in reply.items()}
    assert isinstance(reply, list)
    return {str(k): str(v) for k, v in zip(reply[::2], reply[1::2], strict=False)}


# -- losing the Sentinels' quorum (issue 14) ---------------------------------------------------------------------
def stop_sentinels(group: SentinelGroup, indices: list[int]) -> None:
    """Stop these Sentinels (SIGTERM, waited for); the others keep running.  ``group.stop()`` still reaps them."""
    for i in indices:
        p = group.sentinels[i]
        p.terminate()
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=5)


def ckquorum(group: SentinelGroup, i: int = 0) -> str:
    """``SENTINEL CKQUORUM``: "OK …" when the quorum and a majority are reachable, else the ``NOQUORUM …`` error."""
    c = group.sentinel_client(i)
    try:
        return str(c.execute_command("SENTINEL", "CKQUORUM", MASTER))
    except redis.ResponseError as e:
        return str(e)
    finally:
        c.close()


def master_flags(group: SentinelGroup, i: int = 0) -> set[str]:
    """The flags Sentinel ``i`` holds for the master: ``s_down`` (it alone sees it down), ``o_down`` (a quorum
    agrees), ``failover_in_progress``…"""
    c = group.sentinel_client(i)
    try:
        return set(_fields(c.execute_command("SENTINEL", "master", MASTER)).get("flags", "").split(","))
    finally:
        c.close()
