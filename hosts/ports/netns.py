"""TCP connections from hostd into a sandbox's network namespace.

A socket belongs, for its whole life, to the netns of the thread that created it, whichever
thread uses it afterwards. So one dedicated thread enters the sandbox's netns
(``setns(CLONE_NEWNET)``), creates the socket and goes back to hostd's own netns; the event
loop then connects the socket like any other. Nothing listens on the host and no port is
published: the connection exists only inside the sandbox's netns (on its loopback, for the
OCI runtime), and it keeps that netns alive until it is closed.

Why one dedicated thread: ``setns`` changes only the calling thread, so it must not run on
the event loop's thread or a shared pool's thread, where other work would then run inside a
sandbox's netns. The thread does nothing else, and should going back ever fail it stops
serving (every later connection fails) rather than create sockets in the wrong netns.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import os
import socket
from pathlib import Path

from hosts.runtime.base import PortEndpoint

CONNECT_TIMEOUT_S = 10.0
"""A port on the sandbox's loopback or bridge answers a connect at once (accepted or
refused); this only bounds a sandbox that drops packets."""

_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
_libc.setns.argtypes = (ctypes.c_int, ctypes.c_int)
_libc.setns.restype = ctypes.c_int


class NetnsUnavailable(OSError):
    """The sandbox's netns could not be entered (it is gone: the sandbox stopped meanwhile)."""


class _Creator:
    """The one thread that creates sockets inside other namespaces."""

    def __init__(self) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="netns")
        self._home: int | None = None
        self._broken = False

    async def create(self, netns: Path, family: socket.AddressFamily) -> socket.socket:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._create, netns, family)

    def _create(self, netns: Path, family: socket.AddressFamily) -> socket.socket:
        if self._broken:
            raise NetnsUnavailable("hostd could not return to its own netns earlier; restart hostd")
        if self._home is None:
            self._home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            target = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise NetnsUnavailable(f"cannot open {netns}: {exc.strerror}") from None
        try:
            _setns(target, f"enter {netns}")
            try:
                return socket.socket(family, socket.SOCK_STREAM)
            finally:
                self._return_home()
        finally:
            os.close(target)

    def _return_home(self) -> None:
        assert self._home is not None
        try:
            _setns(self._home, "return to hostd's netns")
        except OSError:
            self._broken = True
            raise


def _setns(fd: int, what: str) -> None:
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise NetnsUnavailable(errno, f"setns ({what}): {os.strerror(errno)}")


_creator = _Creator()


async def connect(endpoint: PortEndpoint, port: int) -> socket.socket:
    """A non-blocking TCP socket connected to ``port`` at ``endpoint``; the caller owns it.

    Raises ``OSError``: ``ConnectionRefusedError`` when nothing listens, ``TimeoutError``,
    ``NetnsUnavailable`` when the netns is gone."""
    family = socket.AF_INET6 if ":" in endpoint.address else socket.AF_INET
    if endpoint.netns is None:
        sock = socket.socket(family, socket.SOCK_STREAM)
    else:
        sock = await _creator.create(endpoint.netns, family)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            await asyncio.get_running_loop().sock_connect(sock, (endpoint.address, port))
    except BaseException:
        sock.close()
        raise
    return sock
