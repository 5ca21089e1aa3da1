"""Binding a listening port up front, so a command can refuse a busy or invalid one in one
line before it starts (or announces) anything."""

import argparse
import errno
import socket

from ticker.errors import UsageError

NEIGHBOURS = 100  # how far above a busy port to look for a free one to suggest


def port_arg(text: str) -> int:
    """An argparse type for --port: a whole number 0..65535 (0: any free port)."""
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65_535:
        raise argparse.ArgumentTypeError(f"must be a port number 1..65535, got {text!r}")
    return port


def _bind(host: str, port: int) -> socket.socket:
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        # As asyncio does: a port in TIME_WAIT is free, one with a listener is not.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except BaseException:
        sock.close()
        raise
    return sock


def free_neighbour(host: str, port: int) -> int | None:
    """The first port above `port` that can be bound on `host`, if one is near."""
    for candidate in range(port + 1, min(port + NEIGHBOURS, 65_535) + 1):
        try:
            _bind(host, candidate).close()
        except OSError:
            continue
        return candidate
    return None


def listen(host: str, port: int, backlog: int = 128) -> socket.socket:
    """A socket bound to host:port and listening, or UsageError saying why not and what
    to do (`port 8092 is in use; try --port 8093`)."""
    try:
        sock = _bind(host, port)
    except socket.gaierror as exc:
        raise UsageError(f"cannot listen on host {host!r}: {exc.strerror}; check --host") from None
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            other = free_neighbour(host, port)
            hint = f"try --port {other}" if other else "choose another with --port"
            raise UsageError(f"port {port} is in use; {hint}") from None
        if exc.errno == errno.EACCES:
            raise UsageError(
                f"port {port} needs privileges this user lacks; try --port 8080"
            ) from None
        if exc.errno == errno.EADDRNOTAVAIL:
            raise UsageError(
                f"{host!r} is not an address of this machine; check --host (e.g. 127.0.0.1)"
            ) from None
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(backlog)
    return sock


def local_url(host: str, port: int) -> str:
    """The address a browser on this machine opens for a server on host:port."""
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"
