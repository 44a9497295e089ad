"""The SSH server: host key, authentication, and what each connection may do.

Authentication (docs/ssh.md). Two ways in, both decided by the core:

- **A token as the user name** (``ssh TOKEN@host``, what Daytona's ``sshCommand`` prints): when
  the client names a user, the core is asked whether it is a live token; if it is, no further
  authentication is needed (the client's ``none`` method succeeds, so no password prompt),
  and the connection is for the token's sandbox.
- **A public key** (``ssh SANDBOX_ID@host`` with a key authorized through ``/ssh-keys``): the
  user name names the sandbox, and the key must be one of that sandbox's.

Anything else is refused: there is no password method, and a key of another sandbox, an
expired, revoked or made-up token all end in "Permission denied". The sandbox id is kept on
the connection (``SANDBOX``) for the sessions and tunnels it opens; every one of them is
still checked by the core (the sandbox must be started).

Only sessions (shell, command, the ``sftp`` subsystem) and local port forwarding
(``direct-tcpip``) are served: remote forwarding, agent and X11 forwarding are refused.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable

import asyncssh
import structlog
from asyncssh.constants import EXTENDED_DATA_STDERR

from contracts import ssh
from gateway.ssh.config import SshGatewayConfig
from gateway.ssh.core_client import CoreClient
from gateway.ssh.forward import TunnelHandler, tunnel_handler
from gateway.ssh.session import SessionHandler

log = structlog.get_logger()

SFTP_VERSION = 3
"""Unused (our sessions never run asyncssh's SFTP server); the constructor wants one."""
SANDBOX = "dnah_sandbox_id"
"""The connection's extra-info key holding the sandbox id it authenticated for."""


class _Session(asyncssh.SSHServerProcess[bytes]):
    """asyncssh's server process, with the ``sftp`` subsystem handed to our handler too.

    asyncssh would serve ``sftp`` itself (from the gateway's own filesystem) or refuse it; here
    every session, the subsystem included, goes to ``SessionHandler.run``, which runs the
    sandbox's own ``sftp-server``."""

    def __init__(self, handler: Callable[[asyncssh.SSHServerProcess[bytes]], Awaitable[None]]) -> None:
        super().__init__(handler, None, SFTP_VERSION, False)

    def subsystem_requested(self, subsystem: str) -> bool:
        return subsystem == "sftp"

    def session_started(self) -> None:
        chan = self.channel
        stdin = asyncssh.SSHReader[bytes](self, chan)
        stdout = asyncssh.SSHWriter[bytes](self, chan)
        stderr = asyncssh.SSHWriter[bytes](self, chan, EXTENDED_DATA_STDERR)
        handler = self._start_process(stdin, stdout, stderr)
        if inspect.isawaitable(handler):
            chan.get_connection().create_task(handler, stdin.logger)


class _Server(asyncssh.SSHServer):
    def __init__(self, core: CoreClient, handler: SessionHandler) -> None:
        self._core = core
        self._handler = handler
        self._conn: asyncssh.SSHServerConnection | None = None
        self._granted: dict[str, tuple[str, str]] = {}
        """user name → (sandbox id, method) the core approved; the one the client finally
        authenticated as is bound to the connection in ``auth_completed``."""

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn

    async def begin_auth(self, username: str) -> bool:
        """No further authentication when the user name is a live token."""
        if len(username) == ssh.SSH_TOKEN_LENGTH and username.isalnum() and username.isascii():
            sandbox_id = await self._core.authenticate(ssh.SshAuthRequest(token=username))
            if sandbox_id is not None:
                self._granted[username] = (sandbox_id, "token")
                return False
        return True

    def password_auth_supported(self) -> bool:
        return False

    def kbdint_auth_supported(self) -> bool:
        return False

    def public_key_auth_supported(self) -> bool:
        return True

    async def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        line = key.export_public_key("openssh").decode().strip()
        request = ssh.SshAuthRequest(sandbox_id=username, public_key=line)
        sandbox_id = await self._core.authenticate(request)
        if sandbox_id is None:
            return False
        self._granted[username] = (sandbox_id, "key")  # asyncssh still checks the signature
        return True

    def auth_completed(self) -> None:
        """Bind the sandbox of the user name the client authenticated as (a key that was
        offered for another user name but never signed for grants nothing)."""
        assert self._conn is not None
        sandbox_id, how = self._granted[self._conn.get_extra_info("username")]
        self._conn.set_extra_info(**{SANDBOX: sandbox_id})
        peer = self._conn.get_extra_info("peername")
        log.info("ssh login", sandbox_id=sandbox_id, method=how, peer=str(peer[0]) if peer else None)

    def session_requested(self) -> asyncssh.SSHServerSession[bytes]:
        return _Session(self._handler.run)

    def connection_requested(
        self, dest_host: str, dest_port: int, orig_host: str, orig_port: int
    ) -> TunnelHandler:
        """``ssh -L``: a connection to a port of the sandbox (its own addresses only)."""
        assert self._conn is not None
        sandbox_id = self._conn.get_extra_info(SANDBOX)
        if sandbox_id is None or dest_host not in ("localhost", "127.0.0.1", "::1", "0.0.0.0"):
            raise asyncssh.ChannelOpenError(
                asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED,
                "only ports of the sandbox itself can be forwarded (use localhost)",
            )
        if not 0 < dest_port < 65536:
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_CONNECT_FAILED, "no such port")
        return tunnel_handler(self._core, sandbox_id, dest_port)

    def server_requested(self, listen_host: str, listen_port: int) -> bool:
        return False  # no remote forwarding


async def serve(config: SshGatewayConfig, core: CoreClient) -> asyncssh.SSHAcceptor:
    """Start listening; the acceptor's ``close`` stops it."""
    handler = SessionHandler(core, config.sftp_server, SANDBOX)
    return await asyncssh.create_server(
        lambda: _Server(core, handler),
        config.host,
        config.port,
        server_host_keys=[load_host_key(config)],
        encoding=None,
        line_editor=False,
        allow_scp=False,
        agent_forwarding=False,
        x11_forwarding=False,
        login_timeout=config.login_timeout_s,
        keepalive_interval=30,
    )


def load_host_key(config: SshGatewayConfig) -> asyncssh.SSHKey:
    """The host key in the var dir, made (Ed25519, mode 0600) on first start."""
    path = config.host_key
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        key = asyncssh.generate_private_key("ssh-ed25519")
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(key.export_private_key())
        tmp.chmod(0o600)
        tmp.rename(path)
        path.with_name(path.name + ".pub").write_bytes(key.export_public_key())
        log.info("made an ssh host key", path=str(path))
    return asyncssh.read_private_key(str(path))


async def run(config: SshGatewayConfig) -> None:
    """Serve until cancelled (SIGTERM/SIGINT in ``__main__``)."""
    core = CoreClient(config.core_url, config.gateway_token)
    acceptor = await serve(config, core)
    log.info("ssh gateway listening", host=config.host, port=config.port)
    try:
        await asyncio.Event().wait()
    finally:
        acceptor.close()
        await acceptor.wait_closed()
        await core.close()
