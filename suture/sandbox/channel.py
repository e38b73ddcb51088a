"""The parent's side of the worker protocol: length-prefixed frames on a pair of pipes.

A frame is a 4-byte big-endian length and that many bytes: JSON, except the raw bytes that follow a
``put`` request or a ``get`` answer (see ``worker.py``, the other side).
"""

from __future__ import annotations

import json
import os
import select
import struct
import time
from typing import Any


class WorkerGone(Exception):
    """The worker's end of the response pipe closed: it died."""


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd`` (a pipe may take it in pieces)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def send(fd: int, obj: dict[str, Any], raw: bytes | None = None) -> None:
    """Send ``obj`` as a JSON frame, then ``raw`` (if given) as a frame of its own."""
    data = json.dumps(obj).encode()
    write_all(fd, struct.pack(">I", len(data)) + data)
    if raw is not None:
        write_all(fd, struct.pack(">I", len(raw)))
        write_all(fd, raw)


def recv_frame(fd: int, deadline: float) -> bytes | None:
    """The next frame from ``fd``, ``None`` at the (monotonic) deadline; :class:`WorkerGone` at EOF."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    buf = bytearray()
    need, header = 4, True
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not poller.poll(left * 1000):
            return None
        chunk = os.read(fd, need - len(buf) if header else min(need - len(buf), 1 << 20))
        if not chunk:
            raise WorkerGone
        buf += chunk
        if header and len(buf) >= 4:
            need = struct.unpack(">I", buf[:4])[0]
            buf, header = bytearray(buf[4:]), False
        if not header and len(buf) >= need:
            return bytes(buf[:need])


def recv(fd: int, deadline: float) -> dict[str, Any] | None:
    """The next JSON frame from ``fd`` (see :func:`recv_frame`)."""
    frame = recv_frame(fd, deadline)
    return None if frame is None else json.loads(frame)
