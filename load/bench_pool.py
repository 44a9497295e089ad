"""Storage pool benchmark: create_disk, snapshot and writable copy of a subvolume holding
100 MB + 1,000 files, P50/P95 each, the disk space 100 writable copies of it use, and the cost
of a settled ``usage`` and of ``identity`` (both commit first), and create_disk again once the
100 copies exist (qgroup accounting grows with the subvolumes sharing data); optionally the import of a real
template (``--template DIR``: a built rootfs, e.g. /var/cache/dnah/templates/<key>/rootfs).

It makes its own pool, a loop-mounted image in a temporary directory, and removes it at the
end. Needs root. Prints one JSON object.

    python -m load.bench_pool
    python -m load.bench_pool --runs 50 --template /var/cache/dnah/templates/dnah-base-<hash>/rootfs
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from hosts.storage import _btrfs, _loop
from hosts.storage.pool import PoolConfig, StoragePool
from load.bench_core import machine, pct

DATA_MB = 100
FILES = 1000
COPIES = 100


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return (time.perf_counter() - started) * 1000


def summary(samples_ms: list[float]) -> dict[str, float]:
    return {
        "n": len(samples_ms),
        "p50_ms": round(pct(samples_ms, 0.5), 2),
        "p95_ms": round(pct(samples_ms, 0.95), 2),
        "mean_ms": round(statistics.fmean(samples_ms), 2),
    }


def used_bytes(path: Path) -> int:
    _btrfs.sync(path)
    fs = os.statvfs(path)
    return (fs.f_blocks - fs.f_bfree) * fs.f_frsize


def source_subvolume(pool: StoragePool) -> Path:
    source = pool.snapshots / "bench-source"
    _btrfs.create(source)
    (source / "big").write_bytes(os.urandom(DATA_MB * 1_000_000))
    (source / "small").mkdir()
    for i in range(FILES):
        (source / "small" / str(i)).write_bytes(os.urandom(1000))
    _btrfs.set_readonly(source, True)
    return source


def run(pool: StoragePool, runs: int, template: Path | None) -> dict[str, object]:
    source = source_subvolume(pool)
    results: dict[str, object] = {}

    create = [timed(lambda i=i: pool.create_disk(f"bench-{i}", source)) for i in range(runs)]
    snapshot = [
        timed(lambda i=i: pool.snapshot(pool.disk(f"bench-{i}"), pool.snapshots / f"s-{i}"))
        for i in range(runs)
    ]
    copy = [
        timed(lambda i=i: pool.writable_copy(pool.snapshots / f"s-{i}", pool.snapshots / f"w-{i}"))
        for i in range(runs)
    ]
    delete = [timed(lambda i=i: pool.delete_disk(f"bench-{i}")) for i in range(runs)]
    results.update(create_disk=summary(create), snapshot=summary(snapshot), writable_copy=summary(copy))
    results["delete_disk"] = summary(delete)

    disk = pool.create_disk("bench-usage", source)
    results["usage_settled"] = summary([timed(lambda: pool.usage(disk)) for _ in range(runs)])
    results["usage_settled_after_8mb_write"] = summary(
        [
            timed(lambda: ((disk / "w").write_bytes(os.urandom(8_000_000)), pool.usage(disk)))
            for _ in range(runs)
        ]
    )
    results["identity"] = summary([timed(lambda: pool.identity(source)) for _ in range(runs)])

    before = used_bytes(pool.root)
    for i in range(COPIES):
        pool.writable_copy(source, pool.snapshots / f"copy-{i}")
    results["copies"] = COPIES
    results["copies_used_bytes"] = used_bytes(pool.root) - before
    results["source_bytes"] = DATA_MB * 1_000_000 + FILES * 1000
    # qgroup accounting walks every subvolume sharing an extent, so the cost grows with them.
    crowded = [timed(lambda i=i: pool.create_disk(f"crowded-{i}", source)) for i in range(runs)]
    results["create_disk_beside_100_copies"] = summary(crowded)

    if template is not None:
        started = time.perf_counter()
        pool.template("bench", "0", template, uid_shift=1_000_000)
        results["template_import_ms"] = round((time.perf_counter() - started) * 1000, 1)
        results["template_bytes"] = used_bytes(pool.root) - before - int(results["copies_used_bytes"])  # type: ignore[call-overload]
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="samples of each operation")
    parser.add_argument("--template", type=Path, help="a template rootfs to time the import of")
    args = parser.parse_args()

    base = Path(tempfile.mkdtemp(prefix="dnah-bench-pool-"))
    config = PoolConfig(image=base / "pool.img", size_bytes=16 * 2**30, mountpoint=base / "mnt")
    try:
        pool = StoragePool.open(config)
        results = run(pool, args.runs, args.template)
        print(
            json.dumps(
                {"machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M %Z"), **results}, indent=2
            )
        )
    finally:
        _loop.detach_image(config.image, config.mountpoint)
        shutil.rmtree(base)


if __name__ == "__main__":
    main()
