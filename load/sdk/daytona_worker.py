"""The Daytona side of ``load/bench_e2b.py``: the unmodified ``daytona`` SDK doing what
``e2b_worker.py`` does, for a side-by-side; prints JSON ``{measurement: [ms, ...]}``.

Runs in the Daytona SDK's virtualenv (``tests/sdk/install.sh``), configured by
``DAYTONA_API_URL`` and ``DAYTONA_API_KEY``; rounds come as argv like ``e2b_worker.py``'s.
The warm-context equivalent is ``process.code_run`` (a fresh interpreter per call: the
Daytona shape has no persistent kernel here). Imports nothing of the project.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from daytona import Daytona

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
    daytona = Daytona()
    for _ in range(creates):
        started = time.perf_counter()
        sbx = daytona.create()
        sbx.process.exec("true")
        out["create_first_run"].append(round((time.perf_counter() - started) * 1000, 3))
        daytona.delete(sbx)
    sbx = daytona.create()
    for _ in range(20):
        sbx.process.exec("true")
    out["run_true"] = [ms(lambda: sbx.process.exec("true")) for _ in range(runs)]
    for size, rounds, label in ((MB, small, "1mb"), (100 * MB, big, "100mb")):
        writes, reads = transfer(
            lambda path, data: sbx.fs.upload_file(data, path),
            lambda path: sbx.fs.download_file(path),
            size,
            rounds,
        )
        out[f"write_{label}"], out[f"read_{label}"] = writes, reads
    if codes:
        for _ in range(5):
            sbx.process.code_run("print(1+1)")
        out["run_code"] = [ms(lambda: sbx.process.code_run("print(1+1)")) for _ in range(codes)]
    daytona.delete(sbx)
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
