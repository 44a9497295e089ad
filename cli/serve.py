"""How every HTTP service is served: one Granian command line per service.

``make up`` (``cli/stack.py``) and the production units (``dnah serve <name>``) both build it
here, so a server setting — a timeout, a header limit — is decided once for every way the
stack runs.
"""

from __future__ import annotations

import argparse
import os
import sys

SERVICES = {
    # name: (ASGI factory served by Granian, the variable holding its port, default port)
    "core": ("core.http.app:create_app", "DNAH_CORE_PORT", 3100),
    "hostd": ("hosts.app:create_app", "DNAH_HOSTD_PORT", 3200),
    "gateway": ("gateway.app:create_app", "DNAH_GATEWAY_PORT", 3000),
}


def granian_argv(name: str, *, host: str, port: int) -> list[str]:
    """The command that serves ``name`` on ``host:port`` (one worker, uvloop, WebSockets on)."""
    target = SERVICES[name][0]
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
