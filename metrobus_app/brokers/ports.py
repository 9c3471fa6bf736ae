"""Free ports on 127.0.0.1, for brokers, workers and web views started on this machine."""

from __future__ import annotations

import socket


def free_port(preferred: int | None = None) -> int:
    """``preferred`` if nothing listens there, else a port the OS says is free."""
    if preferred is not None and not port_open(preferred):
        return preferred
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def free_ports(count: int, first: int | None = None) -> list[int]:
    """``count`` different free ports (``first`` first, when given).

    ``free_port`` asked twice may answer the same port twice (the OS hands a port out again once
    its socket is closed): a Kafka node once got one port for both of its listeners and refused
    to start.
    """
    ports = [first] if first is not None else []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """True when something accepts connections on ``host:port``."""
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0
