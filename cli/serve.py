"""How every HTTP service is served: one Granian command line per service.

``make up`` (``cli/stack.py``) and the production units (``dnah serve <name>``) both build it
here, so a server setting — a timeout, a header limit — is decided once for every way the
stack runs. The limits come from the service's ``DNAH_HTTP_*`` settings (``guard.config``);
what Granian 2.8.7 does with them was measured, see docs/reliability.md, "The edge of every
process".
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping

from guard import load_guard_config

SERVICES = {
    # name: (ASGI factory served by Granian, the variable holding its port, default port)
    "core": ("core.http.app:create_app", "DNAH_CORE_PORT", 3100),
    "hostd": ("hosts.app:create_app", "DNAH_HOSTD_PORT", 3200),
    "gateway": ("gateway.app:create_app", "DNAH_GATEWAY_PORT", 3000),
}


def granian_argv(name: str, *, host: str, port: int, env: Mapping[str, str] = os.environ) -> list[str]:
    """The command that serves ``name`` on ``host:port`` with the edge settings in ``env``
    (one worker, uvloop, WebSockets on).

    HTTP/1.1 only: every client of every hop speaks it, and Granian's HTTP/2 (which ``auto``
    would also offer, cleartext with prior knowledge) has limits of its own — 16 MiB of
    headers — that the HTTP/1 ones below would not cover. ``--http1-header-read-timeout``
    bounds both a slow request head and an idle kept-alive connection (it runs from the end
    of the previous answer); a head bigger than ``--http1-buffer-size`` (or with more than
    100 fields) is answered 431.
    """
    target = SERVICES[name][0]
    limits = load_guard_config(env, name)
    return [
        sys.executable,
        "-m",
        "granian",
        "--interface",
        "asgi",
        "--factory",
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        "1",
        "--loop",
        "uvloop",
        "--http",
        "1",
        "--http1-header-read-timeout",
        str(max(1, round(limits.header_timeout_s * 1000))),
        "--http1-buffer-size",
        str(limits.header_buffer_bytes),
        "--ws",
        "--log-level",
        "warning",
        target,
    ]


def cmd_serve(args: argparse.Namespace) -> int:
    """Replace this process with the service's server (what a systemd unit runs)."""
    _, port_var, default_port = SERVICES[args.service]
    port = args.port if args.port is not None else int(os.environ.get(port_var, default_port))
    argv = granian_argv(args.service, host=args.host, port=port)
    os.execv(argv[0], argv)  # noqa: S606 - a fixed argv, no shell involved
    return 1  # not reached: execv replaces the process or raises


def add_parser(sub: argparse._SubParsersAction) -> None:
    serve = sub.add_parser("serve", help="serve one service in the foreground (for systemd units)")
    serve.add_argument("service", choices=sorted(SERVICES))
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to bind (default: the service's DNAH_*_PORT)")
    serve.set_defaults(func=cmd_serve)
