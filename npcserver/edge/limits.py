"""Abuse limits that need a little state: rates per session and per address, connections per address,
node pressure.

Pure bookkeeping with an injectable clock, no I/O: `server.py` asks these objects and acts on the
answer (an error, a close, a refused handshake).
"""

from __future__ import annotations

import ipaddress
import json
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

Clock = Callable[[], float]


class TokenBucket:
    """Allows `rate` units per second sustained, with bursts up to `burst` units.

    A client that stays under the rate is never refused; one that sends faster drains the bucket
    and is refused once the burst allowance is spent.
    """

    def __init__(self, rate: float, burst: float, clock: Clock = time.monotonic) -> None:
        if rate <= 0 or burst <= 0:
            raise ValueError("rate and burst must be positive")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._level = burst
        self._at = clock()

    def take(self, amount: float = 1.0) -> bool:
        """Spend `amount` if the bucket holds it; False (and nothing spent) if that would go over."""
        now = self._clock()
        self._level = min(self.burst, self._level + (now - self._at) * self.rate)
        self._at = now
        if amount > self._level:
            return False
        self._level -= amount
        return True

    def wait_s(self, amount: float = 1.0) -> float:
        """Seconds until `amount` could be taken (0.0: now)."""
        level = min(self.burst, self._level + (self._clock() - self._at) * self.rate)
        return max(0.0, (min(amount, self.burst) - level) / self.rate)


class SessionLimits:
    """The per-connection limits the connection loop checks before a frame reaches the session.

    - frames (text or audio) per second, with a burst allowance;
    - audio seconds per second of wall time (1.5 = one and a half times real time), with a burst
      allowance of `audio_burst_s` seconds of audio (clients that buffer, then catch up, are fine).
    A rate of 0 turns that limit off.
    """

    def __init__(
        self,
        frames_per_s: float,
        frame_burst: float,
        audio_rate: float,
        audio_burst_s: float,
        clock: Clock = time.monotonic,
    ) -> None:
        self._frames = TokenBucket(frames_per_s, max(frame_burst, 1.0), clock) if frames_per_s > 0 else None
        self._audio = TokenBucket(audio_rate, max(audio_burst_s, 0.1), clock) if audio_rate > 0 else None

    def frame_allowed(self) -> bool:
        return self._frames is None or self._frames.take()

    def audio_allowed(self, seconds: float) -> bool:
        return self._audio is None or self._audio.take(seconds)


IPV6_CLIENT_PREFIX = 64  # one subscriber's network: an ISP hands out a /64 (or more) per customer


def client_key(address: str) -> str:
    """Who a connection counts as for the per-address limits: an IPv4 address itself (also when it
    arrives IPv4-mapped, ::ffff:203.0.113.7); an IPv6 address by its /64, since one client can pick
    any of the 2^64 addresses in its own network and would otherwise get a fresh allowance with each."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])  # fe80::1%eth0: the zone is no part of the address
    except ValueError:
        return address  # not an IP address (a Unix socket, "?"): counted as given
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/{IPV6_CLIENT_PREFIX}", strict=False))
    return str(ip)


class AddressBudgets:
    """What one client address may spend, all its connections together: reconnecting buys nothing.

    `rates` names each budget (audio seconds, typed lines, ...) with its (rate per second, burst);
    a rate of 0 leaves that one unlimited. Addresses are forgotten oldest first past `max_addresses`
    (one forgotten starts again with a full allowance), so a flood of addresses can't grow memory.
    """

    def __init__(
        self, rates: Mapping[str, tuple[float, float]], clock: Clock = time.monotonic, max_addresses: int = 10_000
    ) -> None:
        self._rates = {what: (rate, max(burst, 1.0)) for what, (rate, burst) in rates.items() if rate > 0}
        self._clock = clock
        self._max_addresses = max_addresses
        self._buckets: OrderedDict[str, dict[str, TokenBucket]] = OrderedDict()

    def take(self, address: str, what: str, amount: float = 1.0) -> bool:
        """Spend `amount` of budget `what`; False (nothing spent) when the address has run out."""
        bucket = self._of(address).get(what)
        return bucket is None or bucket.take(amount)

    def retry_after_s(self, address: str) -> float:
        """Seconds until every budget of the address has room for one unit again (0.0: now)."""
        buckets = self._buckets.get(address)
        return max((bucket.wait_s() for bucket in buckets.values()), default=0.0) if buckets else 0.0

    def _of(self, address: str) -> dict[str, TokenBucket]:
        buckets = self._buckets.pop(address, None)
        if buckets is None:
            buckets = {what: TokenBucket(rate, burst, self._clock) for what, (rate, burst) in self._rates.items()}
            while len(self._buckets) >= self._max_addresses:
                self._buckets.popitem(last=False)
        self._buckets[address] = buckets  # the most recent last
        return buckets


class ConnectionCounter:
    """Open connections per client address, to cap how many one address may hold."""

    def __init__(self, per_address: int) -> None:
        self.per_address = per_address  # 0: no cap
        self._open: dict[str, int] = {}

    def allows(self, address: str) -> bool:
        return self.per_address <= 0 or self._open.get(address, 0) < self.per_address

    def opened(self, address: str) -> None:
        self._open[address] = self._open.get(address, 0) + 1

    def closed(self, address: str) -> None:
        left = self._open.get(address, 0) - 1
        if left > 0:
            self._open[address] = left
        else:
            self._open.pop(address, None)

    def count(self, address: str) -> int:
        return self._open.get(address, 0)


def context_refusal(held: Mapping[str, object], update: Mapping[str, object], max_keys: int, max_entry_chars: int) -> str | None:
    """Why a context update may not be merged into what a session holds (its memory is bounded), or None."""
    for key, value in update.items():
        entry_chars = len(json.dumps({key: value}, ensure_ascii=False))
        if entry_chars > max_entry_chars:
            return f"context entry {key[:40]!r} is {entry_chars} characters as JSON; the limit is {max_entry_chars}"
    keys = len(held.keys() | update.keys())
    if keys > max_keys:
        return f"context would hold {keys} keys; the limit is {max_keys}"
    return None


class StageLoadView(Protocol):
    pending: int


def resident_memory_bytes() -> int:
    """This process's resident set size (Linux /proc; psutil elsewhere)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import psutil

        return int(psutil.Process().memory_info().rss)


@dataclass(frozen=True, slots=True)
class Pressure:
    """Why the node should take no new session now, or None: memory or model queues past their limits."""

    max_rss_mb: int  # 0: no memory limit
    max_queue_depth: int  # 0: no queue limit (calls waiting for or running on one model)

    def refusal(self, rss_bytes: int, load: Mapping[str, StageLoadView]) -> str | None:
        if self.max_rss_mb > 0 and rss_bytes > self.max_rss_mb * 1024 * 1024:
            return f"memory use {rss_bytes / 2**20:.0f} MiB is over the {self.max_rss_mb} MiB limit"
        if self.max_queue_depth > 0:
            for stage, stage_load in load.items():
                if stage_load.pending > self.max_queue_depth:
                    return f"{stage} queue depth {stage_load.pending} is over the limit of {self.max_queue_depth}"
        return None
