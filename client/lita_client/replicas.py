"""Several servers behind one client: the address list, DNS names resolved to every address, and
round-robin over the replicas that are ready.

Why the client balances itself: gRPC keeps one long-lived HTTP/2 connection, so a plain
Kubernetes Service (balancing connections, not requests) sends every request of a client to the
same pod. A headless Service instead publishes every pod's address under one DNS name;
``dns:///lita-grpc.NAMESPACE.svc:8001`` is resolved to all of them and requests go round-robin.

A URL is one address (``host:port``), a comma-separated list (``a:8001,b:8001``), or
``dns:///name:port`` (any mix). A replica whose request failed with UNAVAILABLE, or whose model
was not ready, is *down*: it gets no requests until a readiness check (made lazily, when a
request is being placed and the replica's re-check time has come) finds it ready again. DNS
names are resolved again every ``resolve_every_s`` seconds, so pods added by a scale-out join.
With one address and no DNS name nothing of this changes what a client does: the one replica
is always the one asked.
"""

from __future__ import annotations

import logging
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from lita_client.errors import InvalidRequestError

logger = logging.getLogger(__name__)

DNS_SCHEME = "dns:///"
RECHECK_S = 1.0           # first readiness re-check of a down replica, after this many seconds
MAX_RECHECK_S = 8.0       # re-checks back off (doubling) up to this
RESOLVE_EVERY_S = 30.0    # DNS names are resolved again this often


def split_targets(url: str) -> list[str]:
    """The comma-separated targets of ``url``, each ``host:port`` or ``dns:///host:port``.

    InvalidRequestError names the first target that is empty or lacks a port.
    """
    targets = [part.strip() for part in str(url).split(",")]
    for target in targets:
        host_port = target[len(DNS_SCHEME):] if target.startswith(DNS_SCHEME) else target
        host, sep, port = host_port.rpartition(":")
        if not target or not sep or not host or not port.isdigit():
            raise InvalidRequestError(f"invalid server address {target!r} in {url!r}: expected host:port, "
                                      f"a comma-separated list of them, or {DNS_SCHEME}name:port")
    return targets


def _format(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def resolve_target(target: str) -> list[str]:
    """Every ``ip:port`` a ``dns:///name:port`` target names (sorted, deduplicated); other targets as given.

    A name that does not resolve gives an empty list (the caller reports it when nothing is left).
    """
    if not target.startswith(DNS_SCHEME):
        return [target]
    host, _, port = target[len(DNS_SCHEME):].rpartition(":")
    host = host.strip("[]")
    try:
        infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
    except OSError:
        return []
    return sorted({_format(info[4][0], int(port)) for info in infos})


@dataclass
class Replica:
    """One server address and what the client knows about it.

    ``client`` is the tritonclient object of the owning SDK client (made lazily by it);
    ``down_since`` is None while the replica takes requests.
    """

    address: str
    client: Any = None
    down_since: float | None = None
    next_check: float = 0.0
    recheck_s: float = RECHECK_S
    checking: bool = False
    requests: int = 0  # requests placed on this replica (attempts, retries included)

    @property
    def up(self) -> bool:
        return self.down_since is None


@dataclass
class ReplicaSet:
    """The replicas behind one client URL, and the round-robin cursor over them."""

    url: str
    resolve_every_s: float = RESOLVE_EVERY_S
    clock: Callable[[], float] = time.monotonic
    resolver: Callable[[str], list[str]] = resolve_target
    replicas: list[Replica] = field(default_factory=list)
    _targets: list[str] = field(default_factory=list)
    _cursor: int = 0
    _resolved_at: float | None = None

    def __post_init__(self) -> None:
        self._targets = split_targets(self.url)
        self.refresh(force=True)
        if not self.replicas:
            raise InvalidRequestError(f"no server address: {self.url!r} resolved to nothing")

    @property
    def dynamic(self) -> bool:
        """Whether some target is a DNS name (resolved again from time to time)."""
        return any(t.startswith(DNS_SCHEME) for t in self._targets)

    @property
    def single(self) -> bool:
        """One fixed address: the behaviour of a plain one-server client."""
        return len(self.replicas) == 1 and not self.dynamic

    def __len__(self) -> int:
        return len(self.replicas)

    def refresh(self, force: bool = False) -> list[Replica]:
        """Resolve DNS targets again when due; keep known replicas (and their state), add new ones,
        drop vanished ones. Returns the replicas dropped (their clients are the caller's to close).

        A resolution that finds nothing keeps the current list (a DNS hiccup must not empty it).
        """
        now = self.clock()
        if not force and (not self.dynamic or (self._resolved_at is not None
                                               and now - self._resolved_at < self.resolve_every_s)):
            return []
        self._resolved_at = now
        addresses = list(dict.fromkeys(a for t in self._targets for a in self.resolver(t)))
        if not addresses:
            return []
        known = {r.address: r for r in self.replicas}
        self.replicas = [known.get(a) or Replica(a) for a in addresses]
        return [r for a, r in known.items() if a not in set(addresses)]

    def pick(self, exclude: Iterable[str] = ()) -> Replica | None:
        """The next ready replica in round-robin order, not in ``exclude``; None when there is none."""
        skip = set(exclude)
        n = len(self.replicas)
        for k in range(n):
            replica = self.replicas[(self._cursor + k) % n]
            if replica.up and replica.address not in skip:
                self._cursor = (self._cursor + k + 1) % n
                return replica
        return None

    def fallback(self, exclude: Iterable[str] = ()) -> Replica:
        """When no replica is ready: the one not in ``exclude`` (unless all are) whose re-check comes
        first; the attempt itself checks it."""
        skip = set(exclude)
        candidates = [r for r in self.replicas if r.address not in skip] or self.replicas
        replica = min(candidates, key=lambda r: (r.next_check, r.address))
        self._cursor = (self.replicas.index(replica) + 1) % len(self.replicas)
        return replica

    def due(self) -> list[Replica]:
        """Down replicas whose readiness re-check is due and not already running."""
        now = self.clock()
        return [r for r in self.replicas if not r.up and not r.checking and r.next_check <= now]

    def mark_down(self, replica: Replica) -> bool:
        """Take ``replica`` out of rotation until a check finds it ready; True when it was up until now."""
        now = self.clock()
        was_up = replica.up
        if was_up:
            replica.down_since = now
            replica.recheck_s = RECHECK_S
            logger.info("server out of rotation", extra={"address": replica.address})
        else:
            replica.recheck_s = min(replica.recheck_s * 2, MAX_RECHECK_S)
        replica.next_check = now + replica.recheck_s
        return was_up

    def mark_up(self, replica: Replica) -> None:
        if not replica.up:
            logger.info("server back in rotation", extra={"address": replica.address})
        replica.down_since = None
        replica.recheck_s = RECHECK_S

    def state(self) -> list[dict[str, Any]]:
        """``{"address", "up", "requests"}`` per replica, in order (for logs and the CLI)."""
        return [{"address": r.address, "up": r.up, "requests": r.requests} for r in self.replicas]
