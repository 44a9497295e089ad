"""``python3 -m guest.code_interpreter [--host 0.0.0.0] [--port 49999] [--cwd DIR]``.

Starts the server, then the default Python context in the background (so the first
``run_code`` finds a kernel ready), and serves until SIGTERM/SIGINT, which shut every kernel
down. Kernels inherit this process's environment minus ``PYTHONPATH`` (the agent's code path,
set only so this module can be found).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from types import FrameType

from guest.code_interpreter.kernels import ContextError, Contexts
from guest.code_interpreter.server import Server

DEFAULT_PORT = 49999


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="guest.code_interpreter")
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--cwd", default=None, help="default contexts' directory (default: the home)")
    args = parser.parse_args(argv)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")  # ipykernel's debugger warns on stderr otherwise
    contexts = Contexts(args.cwd or os.path.expanduser("~"), env)
    server = Server((args.host, args.port), contexts)

    def stop(_signum: int, _frame: FrameType | None) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    threading.Thread(target=_warm, args=(contexts,), daemon=True).start()
    print(f"code interpreter listening on {args.host}:{args.port}", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
        contexts.close_all()
    return 0


def _warm(contexts: Contexts) -> None:
    try:
        contexts.default("python")
    except ContextError as exc:  # the first /execute will try again and report it
        print(f"default context not started: {exc}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
