"""This process's name among every process of the platform, on every host."""

from __future__ import annotations

import os
import socket
import uuid
from functools import lru_cache


@lru_cache(maxsize=1)
def instance_name() -> str:
    """`<host>:<pid>:<random>`: the host and pid say where to look, the random part keeps a
    restarted process apart from the one it replaced (a container keeps its host name and its
    pid 1 across a restart)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
