"""Who may connect and control: tokens, origins, addresses, connection limits, log redaction,
and the client frames a server must refuse. Pure: no I/O."""

import contextlib
import hmac
import ipaddress
import logging
import os
import re
import time
from dataclasses import dataclass, field
from typing import Any

from ticker.core.pace import Pace

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _words(raw: str | None) -> list[str]:
    return [w.strip() for w in (raw or "").split(",") if w.strip()]


def parse_networks(specs: list[str]) -> tuple[Network, ...]:
    """Addresses or networks (`10.0.0.0/8`, `::1`); raises ValueError naming a bad one."""
    nets: list[Network] = []
    for spec in specs:
        try:
            nets.append(ipaddress.ip_network(spec, strict=False))
        except ValueError:
            raise ValueError(
                f"{spec!r} is not an IP address or network (like 10.0.0.0/8)"
            ) from None
    return tuple(nets)


@dataclass(frozen=True)
class Policy:
    """The server's safety settings; the defaults are safe for a public read-only feed.

    `from_env` reads TICKER_FEED_TOKEN, TICKER_CONTROL_TOKEN, TICKER_METRICS_TOKEN,
    TICKER_PUBLIC_ORIGINS, TICKER_ALLOWED_ORIGINS and TICKER_TRUSTED_PROXIES (comma lists).
    """

    feed_token: str | None = None  # when set, /ws and /api/state need it
    control_token: str | None = None  # /api/replay needs it; without one, control is off
    metrics_token: str | None = None  # when set, /metrics needs it (else the feed token)
    # The origins pages are served from (`https://ticker.example.com`); empty: the address
    # the server was reached on (its socket's, never the request's Host header).
    public_origins: frozenset[str] = frozenset()
    allowed_origins: frozenset[str] = frozenset()  # other pages allowed to connect
    trusted_proxies: tuple[Network, ...] = ()  # whose X-Forwarded-For is believed
    max_clients: int = 20_000
    connects_per_ip_per_s: float = 20.0

    @property
    def connect_burst(self) -> int:
        """New connections an address may open at once: two seconds' worth."""
        return max(1, int(2 * self.connects_per_ip_per_s))

    @classmethod
    def from_env(cls, **overrides: object) -> "Policy":
        env = os.environ
        values: dict[str, object] = {
            "feed_token": env.get("TICKER_FEED_TOKEN") or None,
            "control_token": env.get("TICKER_CONTROL_TOKEN") or None,
            "metrics_token": env.get("TICKER_METRICS_TOKEN") or None,
            "public_origins": frozenset(_words(env.get("TICKER_PUBLIC_ORIGINS"))),
            "allowed_origins": frozenset(_words(env.get("TICKER_ALLOWED_ORIGINS"))),
            "trusted_proxies": parse_networks(_words(env.get("TICKER_TRUSTED_PROXIES"))),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]

    def origin_allowed(
        self, origin: str | None, own: frozenset[str] | str, scheme: str = "http"
    ) -> bool:
        """Programs send no Origin; browsers may come from the public origin(s) or a listed
        one. Without public origins configured, the public origin is `own`: the origins of
        the address the server was reached on (see `own_origins`; a `host:port` string is
        taken as `scheme://host:port`), never the request's Host header, which a page on
        a rebinding domain controls."""
        if origin is None:
            return True
        if isinstance(own, str):
            own = frozenset({f"{scheme}://{own}"})
        return origin in (self.public_origins or own) or origin in self.allowed_origins

    def trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self.trusted_proxies)

    def client_address(self, remote: str | None, forwarded_for: str | None) -> str:
        """The address to limit: the peer's, or behind trusted proxies the nearest address
        in X-Forwarded-For that is not one of them (clients can write the rest)."""
        if remote is None:
            return "?"
        if not forwarded_for or not self.trusted(remote):
            return remote
        hops = _words(forwarded_for)
        for hop in reversed(hops):
            if not self.trusted(hop):
                return hop[:64]
        return hops[0][:64] if hops else remote


def own_origins(scheme: str, sockname: Any, host: str | None = None) -> frozenset[str]:
    """The origins of a page served from this server: from the socket address `sockname`
    (plus `localhost` for a loopback address), and from the `Host` header only when it
    names an IP address or `localhost` (as behind a proxy on another port). A domain name
    in `Host` is never taken: on a rebinding domain it is the attacker's."""
    origins: set[str] = set()
    default = {"http": 80, "https": 443}.get(scheme)
    if isinstance(sockname, tuple) and len(sockname) >= 2:
        address, port = str(sockname[0]), int(sockname[1])
        with contextlib.suppress(ValueError):
            ip = ipaddress.ip_address(address)
            names = {f"[{address}]" if ip.version == 6 else address}
            if ip.is_loopback:
                names |= {"localhost", "127.0.0.1", "[::1]"}
            suffix = "" if port == default else f":{port}"
            origins |= {f"{scheme}://{n}{suffix}" for n in names}
    if host:
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        if name.lower() == "localhost" or _is_ip(name.strip("[]")):
            origins.add(f"{scheme}://{host.lower()}")
    return frozenset(origins)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def token_matches(expected: str, given: str | None) -> bool:
    """Constant-time comparison; a token that is not text (odd bytes) matches nothing."""
    if given is None:
        return False
    try:
        raw = given.encode("utf-8")
    except UnicodeEncodeError:  # header bytes that were not UTF-8 (surrogate escapes)
        return False
    return hmac.compare_digest(expected.encode(), raw)


def bearer(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header; None without one, or when
    the token is not printable UTF-8 text (no token of ours is)."""
    if not (header and header.startswith("Bearer ")):
        return None
    token = header[len("Bearer ") :].strip()
    try:
        token.encode("utf-8")
    except UnicodeEncodeError:  # bytes that were not UTF-8 (surrogate escapes)
        return None
    return token if token.isprintable() else None


TOKEN_ANYWHERE = re.compile(r"([?&;][\w.-]*token=)[^&;#\s\"]*", re.IGNORECASE)


def redact(text: str) -> str:
    """`text` with the value of every `…token=` query parameter replaced."""
    return TOKEN_ANYWHERE.sub(r"\1[redacted]", text)


class RedactTokens(logging.Filter):
    """Keeps tokens out of the access log: the request line and the Referer header both
    carry the page's URL, and a URL may carry `?token=`."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redact(record.getMessage()), None
        line = getattr(record, "first_request_line", None)
        if isinstance(line, str):
            record.first_request_line = redact(line)
        headers = getattr(record, "request_header", None)
        if isinstance(headers, dict):
            record.request_header = {
                k: redact(v) if isinstance(v, str) else v for k, v in headers.items()
            }
        return True


class MaskCheck:
    """Follows the frames a client sends (RFC 6455 section 5.2) and says when one is not
    masked: a server must close such a connection (1002), and aiohttp accepts them."""

    def __init__(self) -> None:
        self.head = bytearray()  # the current frame's header bytes, while incomplete
        self.skip = 0  # payload bytes of the current frame still to come

    @staticmethod
    def _header_size(head: bytearray) -> int:
        if len(head) < 2:
            return 2
        length = head[1] & 0x7F
        return 2 + (2 if length == 126 else 8 if length == 127 else 0) + 4

    def feed(self, data: bytes | bytearray | memoryview) -> bool:
        """Take the next bytes from the client; False once a frame is unmasked."""
        view, pos = memoryview(data), 0
        while pos < len(view):
            if self.skip:
                take = min(self.skip, len(view) - pos)
                pos, self.skip = pos + take, self.skip - take
                continue
            take = min(self._header_size(self.head) - len(self.head), len(view) - pos)
            self.head += view[pos : pos + take]
            pos += take
            if len(self.head) >= 2 and not self.head[1] & 0x80:
                return False
            if len(self.head) == self._header_size(self.head):
                length = self.head[1] & 0x7F
                if length == 126:
                    length = int.from_bytes(self.head[2:4], "big")
                elif length == 127:
                    length = int.from_bytes(self.head[2:10], "big")
                self.skip = length
                self.head.clear()
        return True


@dataclass
class RateLimiter:
    """A token bucket (`ticker.core.pace.Pace`) per client address for new connections."""

    rate: float
    burst: int
    buckets: dict[str, Pace] = field(default_factory=dict)

    def allow(self, key: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        bucket = self.buckets.get(key)
        if bucket is None:  # a new address starts with a full bucket
            bucket = self.buckets[key] = Pace(self.rate, float(self.burst), float(self.burst))
        if bucket.wait(now) > 0:
            return False
        bucket.take(now)
        if len(self.buckets) > 100_000:  # forget addresses whose buckets are full again
            full_after = self.burst / self.rate
            self.buckets = {k: v for k, v in self.buckets.items() if now - v.at < full_after}
        return True
