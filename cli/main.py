"""``dnah``: start the stack (``up``/``down``), build templates, price routes, pay for requests.

``make up`` and ``make down`` call this; so can a person.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from cli import pricing_cmd, request_cmd, serve, wallet_cmd
from cli.stack import Stack, StackConfig, StackError
from cli.supervisor import Supervisor
from devnet import cli as devnet_cli
from hosts.config import DEFAULT_VM_IMAGE_CACHE, RUNTIMES, VM_RUNTIMES, ConfigError

if TYPE_CHECKING:
    from hosts.templates import Template

DEFAULT_VAR = Path("var")


def _var_dir() -> Path:
    return Path(os.environ.get("DNAH_VAR_DIR", DEFAULT_VAR)).resolve()


def _template_cache() -> Path:
    return Path(os.environ.get("DNAH_TEMPLATE_CACHE", "/var/cache/dnah/templates"))


def cmd_template_build(args: argparse.Namespace) -> int:
    template = _template_build(_template_cache(), args.names or None)
    if getattr(args, "vm", False) or os.environ.get("DNAH_HOST_RUNTIME") in VM_RUNTIMES:
        _vm_image_build(template, Path(os.environ.get("DNAH_VM_IMAGE_CACHE", DEFAULT_VM_IMAGE_CACHE)))
    return 0


def _template_build(cache: Path, names: list[str] | None = None) -> Template:
    """Build (or find) in ``cache`` the templates ``names`` (default: every template with a
    recipe, the base and ``install/templates/*.sh``); return the base."""
    from hosts.templates import DEFAULT_TEMPLATE, TemplateStore

    script = Path(__file__).resolve().parent.parent / "install" / "build-template.sh"
    store = TemplateStore(cache, script)
    for name in names or store.names():
        started = time.monotonic()
        tpl = store.ensure(name, progress=lambda line: print(f"  {line}", flush=True))
        size = store.record(tpl).size_bytes / 2**20
        print(
            f"template {tpl.name} ready ({tpl.content_hash}, {size:.0f} MiB) at {tpl.rootfs}"
            f" [{time.monotonic() - started:.1f} s]",
            flush=True,
        )
    return store.ensure(DEFAULT_TEMPLATE)


def _vm_image_build(template: Template, cache: Path) -> None:
    """Build (or find) in ``cache`` the guest image microVMs boot from ``template``, showing
    each step with the seconds since the start."""
    from hosts.vm.images import VmImageStore

    guest_dir = Path(__file__).resolve().parent.parent / "guest"
    started = time.monotonic()

    def show(line: str) -> None:
        print(f"  [{time.monotonic() - started:5.1f} s] {line}", flush=True)

    image = VmImageStore(cache, guest_dir).ensure(template, progress=show)
    print(
        f"guest image {image.key} ready (kernel {image.kernel_version}) at {image.rootfs.parent}"
        f" [{time.monotonic() - started:.1f} s]"
    )


def cmd_up(args: argparse.Namespace) -> int:
    var = _var_dir()
    pidfile = var / "run" / "dnah-up.pid"
    if pidfile.exists() and _alive(int(pidfile.read_text())):
        print(
            f"dnah is already up (pid {pidfile.read_text().strip()}); `make down` stops it", file=sys.stderr
        )
        return 1
    env = os.environ
    config = StackConfig(
        var_dir=var,
        gateway_port=int(env.get("DNAH_GATEWAY_PORT", "3000")),
        core_port=int(env.get("DNAH_CORE_PORT", "3100")),
        hostd_port=int(env.get("DNAH_HOSTD_PORT", "3200")),
        ssh_port=int(env.get("DNAH_SSH_PORT", "2222")),
        template_cache=_template_cache(),
        database_url=env.get("DNAH_DATABASE_URL") or None,
        redis_url=env.get("DNAH_REDIS_URL") or None,
        log_format=env.get("DNAH_LOG_FORMAT", "json"),
        payments=args.payments,
        runtime=args.runtime,
        devnet_port=int(env.get("DNAH_DEVNET_PORT", "8545")),
    )
    # hostd readies every template in the background, so no first create waits for an import
    os.environ.setdefault("DNAH_PREPARE_TEMPLATES", "all")
    stack = Stack(config, say=lambda line: print(line, flush=True))
    try:
        hostd = stack.hostd_config()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print("checking the templates (the first build takes a few minutes)")
    template = _template_build(hostd.template_cache)
    if hostd.runtime in VM_RUNTIMES:
        # built here, not by hostd at the first create, which would wait on it against the
        # core's host timeout
        print(f"checking the guest image for the {hostd.runtime} runtime")
        _vm_image_build(template, hostd.vm_image_cache)
    return _serve(stack, pidfile)


def _serve(stack: Stack, pidfile: Path) -> int:
    """Start the stack and keep it up until SIGINT/SIGTERM; then stop it."""
    stopping = threading.Event()

    def request_stop(*_: object) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    try:
        stack.start()
        pidfile.write_text(str(os.getpid()))
        _banner(stack)
        # A child that dies is started again (with backoff), not a reason to stop the rest.
        Supervisor(stack).run(stopping)
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        print("stopping…")
        stack.stop()
        pidfile.unlink(missing_ok=True)
        print("stopped")
    return 0


def _banner(stack: Stack) -> None:
    url = stack.config.gateway_url
    if stack.config.payments:
        _payment_banner(stack)
        return
    print(
        f"""
dnah is up.
  gateway   {url}
  admin key {stack.var}/admin.token
  logs      {stack.var}/log/

Try it:
  TOKEN=$(cat {stack.var}/admin.token)
  curl -s -X POST {url}/v1/sandboxes -H "Authorization: Bearer $TOKEN" \\
       -H 'content-type: application/json' -d '{{"template":"dnah-base"}}'
  curl -s -X POST {url}/v1/sandboxes/<id>/exec -H "Authorization: Bearer $TOKEN" \\
       -H 'content-type: application/json' -d '{{"cmd":["uname","-a"]}}'

A service that crashes is restarted (with backoff) and said so here; sandboxes keep running.
Ctrl-C (or `make down`) stops everything.""",
        flush=True,
    )


def _payment_banner(stack: Stack) -> None:
    url, rpc = stack.config.gateway_url, stack.config.devnet_url
    print(
        f"""
dnah is up, in payment mode on the devnet (a local stand-in for the Tempo chain).
  gateway   {url}   (every call is paid in pathUSD; free: /openapi.json /llms.txt /__mpp/*)
  devnet    {rpc}   (chain id 1337)
  payer     {stack.var}/demo.key  (funded with $1000 from the devnet faucet)
  logs      {stack.var}/log/

Pay for a sandbox and a command (prices: `dnah pricing show`; preview with --dry-run):
  export DNAH_PRIVATE_KEY=$(cat {stack.var}/demo.key)
  .venv/bin/dnah request --rpc {rpc} --dry-run -X POST --json '{{}}' {url}/sandbox
  .venv/bin/dnah request --rpc {rpc} -X POST --json '{{}}' {url}/sandbox
  .venv/bin/dnah request --rpc {rpc} -X POST --json '{{"command":"echo hi"}}' \\
       {url}/sandbox/<id>/toolbox/process/execute
  .venv/bin/dnah wallet balance --rpc {rpc} $(.venv/bin/python -c "from eth_account import Account; \\
       print(Account.from_key(open('{stack.var}/demo.key').read().strip()).address)")

Ctrl-C (or `make down`) stops everything.""",
        flush=True,
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def cmd_down(_: argparse.Namespace) -> int:
    pidfile = _var_dir() / "run" / "dnah-up.pid"
    if not pidfile.exists():
        print("dnah is not up")
        return 0
    pid = int(pidfile.read_text())
    if _alive(pid):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 60
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
    print("dnah is down")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dnah", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the whole stack in the foreground")
    up.add_argument(
        "--payments", choices=["devnet"], help="also run the devnet and put the gateway in payment mode"
    )
    up.add_argument(
        "--runtime",
        choices=[r for r in RUNTIMES if r != "fake"],
        help="what runs sandboxes (default: $DNAH_HOST_RUNTIME, else auto; docs/runtimes.md)",
    )
    up.set_defaults(func=cmd_up)
    sub.add_parser("down", help="stop a stack started with `dnah up`").set_defaults(func=cmd_down)
    template = sub.add_parser("template", help="manage templates")
    template_sub = template.add_subparsers(dest="template_command", required=True)
    build = template_sub.add_parser(
        "build", help="build the templates (and the base's VM guest image) if needed"
    )
    build.add_argument(
        "names",
        nargs="*",
        help="templates to build (default: all: dnah-base and those in install/templates/)",
    )
    build.add_argument(
        "--vm",
        action="store_true",
        help="also build the microVM guest image (implied by DNAH_HOST_RUNTIME=qemu|cloud-hypervisor)",
    )
    build.set_defaults(func=cmd_template_build)
    serve.add_parser(sub)
    pricing_cmd.add_parser(sub)
    request_cmd.add_parser(sub)
    wallet_cmd.add_parser(sub)
    devnet_cli.add_parser(sub)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
