"""``python -m gateway.ssh``: run the SSH gateway until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys

from contracts.observability import configure_logging
from gateway.ssh.config import ConfigError, load_config
from gateway.ssh.server import run


async def _main() -> None:
    config = load_config()
    configure_logging("ssh-gateway", fmt=config.log_format)
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await run(config)


def main() -> int:
    try:
        asyncio.run(_main())
    except ConfigError as exc:
        print(f"ssh gateway: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
