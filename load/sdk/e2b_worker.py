"""The E2B side of ``load/bench_e2b.py``: the unmodified ``e2b`` and ``e2b-code-interpreter``
SDKs, timed as a user's program sees them; prints JSON ``{measurement: [ms, ...]}``.

Runs in the E2B SDKs' virtualenv (``tests/sdk/install.sh tests/sdk/requirements-e2b.txt``),
configured by ``E2B_API_URL``, ``E2B_SANDBOX_URL`` and ``E2B_API_KEY``; rounds come as argv:
``creates runs small big codes``. Imports nothing of the project.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from e2b import Sandbox
from e2b_code_interpreter import Sandbox as CodeSandbox

MB = 1_000_000


def ms(call: Callable[[], Any]) -> float:
    started = time.perf_counter()
    call()
    return round((time.perf_counter() - started) * 1000, 3)


def transfer(
    write: Callable[[str, bytes], Any], read: Callable[[str], bytes], size: int, rounds: int
) -> tuple[list[float], list[float]]:
    """``rounds`` writes and reads of ``size`` random bytes, each read checked for length."""
    data = os.urandom(size)
    writes: list[float] = []
    reads: list[float] = []
    for i in range(rounds):
        path = f"/tmp/bench-{i}.bin"
        started = time.perf_counter()
        write(path, data)
        writes.append(round((time.perf_counter() - started) * 1000, 3))
        started = time.perf_counter()
        got = read(path)
        reads.append(round((time.perf_counter() - started) * 1000, 3))
        if len(got) != size:
            raise RuntimeError(f"read {len(got)} of {size} bytes")
    return writes, reads


def main() -> int:
    creates, runs, small, big, codes = (int(a) for a in sys.argv[1:6])
    out: dict[str, list[float]] = {
        name: []
        for name in (
            "create_first_run",
            "run_true",
            "write_1mb",
            "read_1mb",
            "write_100mb",
            "read_100mb",
            "run_code",
        )
    }
    for _ in range(creates):
        started = time.perf_counter()
        sbx = Sandbox.create()
        sbx.commands.run("true")
        out["create_first_run"].append(round((time.perf_counter() - started) * 1000, 3))
        sbx.kill()
    sbx = Sandbox.create()
    for _ in range(20):
        sbx.commands.run("true")
    out["run_true"] = [ms(lambda: sbx.commands.run("true")) for _ in range(runs)]
    for size, rounds, label in ((MB, small, "1mb"), (100 * MB, big, "100mb")):
        writes, reads = transfer(
            lambda path, data: sbx.files.write(path, data),
            lambda path: sbx.files.read(path, format="bytes"),
            size,
            rounds,
        )
        out[f"write_{label}"], out[f"read_{label}"] = writes, reads
    sbx.kill()
    if codes:  # 0 leaves the code interpreter out
        code = CodeSandbox.create()
        for _ in range(5):
            code.run_code("1+1")
        out["run_code"] = [ms(lambda: code.run_code("1+1")) for _ in range(codes)]
        code.kill()
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
