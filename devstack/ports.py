"""Free TCP ports on 127.0.0.1, and waiting for a server to listen on one."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # as the servers do, so that connections in TIME_WAIT don't count as "in use"
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(preferred: int | None = None) -> int:
    """`preferred` when it is free, else a port the kernel says is free right now."""
    if preferred and port_is_free(preferred):
        return preferred
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(
    port: int, what: str, timeout_s: float = 10, alive: Callable[[], bool] | None = None
) -> None:
    """Return once something accepts connections on 127.0.0.1:`port`; raise RuntimeError after
    `timeout_s`, or as soon as `alive()` says the server has exited."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        if alive is not None and not alive():
            break
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not start on port {port}")
