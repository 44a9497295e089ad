"""Template build logs: the store keeps a build's output beside the template, and hostd serves
it at ``GET /templates/{name}/build-log`` (what Daytona's ``build-logs-url`` ends up reading)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import httpx
import msgspec
import pytest

from hosts.config import BUILD_SCRIPT
from hosts.errors import RuntimeFailure, TemplateNotFound
from hosts.templates import BUILD_LOG, TemplateRecord, TemplateStore
from tests.hosts._hostd_fixtures import (
    HostdProcess,
    RecordingCore,
    free_port,
    hostd_env,
    kernel_names,
    wait_for,
)

STAND_IN = """#!/bin/sh
set -eu
echo "step 1/2: filling $1"
mkdir -p "$1/etc"
echo hi > "$1/etc/motd"
echo "step 2/2: done, with a non-UTF-8 byte: \\377"
"""


def _store(tmp_path: Path, script_text: str) -> TemplateStore:
    script = tmp_path / "build.sh"
    script.write_text(script_text)
    return TemplateStore(tmp_path / "cache", script)


@pytest.mark.skipif(os.geteuid() != 0, reason="building templates needs root")
def test_a_build_keeps_its_output_beside_the_template(tmp_path: Path) -> None:
    store = _store(tmp_path, STAND_IN)
    shown: list[str] = []
    template = store.ensure("tiny", progress=shown.append)

    kept = (template.rootfs.parent / BUILD_LOG).read_text(errors="replace").splitlines()
    assert kept == shown  # every line shown while building, in order, is kept
    assert kept[0].startswith("step 1/2: filling ") and kept[-1] == "hashing the tree"
    record = store.record(template)
    log = store.build_log("tiny")
    first, *rest = log.splitlines()
    assert first == (
        f"# template tiny-{record.hash}, built {record.built_at}, {record.size_bytes} bytes,"
        f" tree sha256 {record.tree_hash}"
    )
    assert rest == kept


@pytest.mark.skipif(os.geteuid() != 0, reason="building templates needs root")
def test_a_failed_build_leaves_neither_template_nor_log(tmp_path: Path) -> None:
    store = _store(tmp_path, "#!/bin/sh\necho trying\nexit 3\n")
    with pytest.raises(RuntimeFailure, match="exit 3"):
        store.ensure("tiny")
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [f"tiny-{store.recipe_hash()}.lock"]
    with pytest.raises(TemplateNotFound):
        store.build_log("tiny")


def _template_without_log(cache: Path, name: str) -> TemplateRecord:
    """A template laid out as a build before build logs made it (rootfs and template.json)."""
    key = TemplateStore(cache, BUILD_SCRIPT).recipe_hash()
    directory = cache / f"{name}-{key}"
    (directory / "rootfs").mkdir(parents=True)
    built = "2026-12-01T10:00:00+00:00"
    record = TemplateRecord(name=name, hash=key, built_at=built, size_bytes=7, tree_hash="ab")
    (directory / "template.json").write_bytes(msgspec.json.encode(record))
    return record


def test_a_template_built_before_logs_were_kept_says_so(tmp_path: Path) -> None:
    record = _template_without_log(tmp_path, "old")
    log = TemplateStore(tmp_path, BUILD_SCRIPT).build_log("old")
    assert log.splitlines() == [
        f"# template old-{record.hash}, built 2026-12-01T10:00:00+00:00, 7 bytes, tree sha256 ab",
        "# its build output was not kept: it was built before templates kept a build log",
    ]


def test_hostd_serves_the_build_log_with_its_token_only() -> None:
    var_dir = Path(tempfile.mkdtemp(prefix="dnah-bl-", dir="/tmp"))
    cache = var_dir / "templates"
    record = _template_without_log(cache, "dnah-base")
    (cache / f"dnah-base-{record.hash}" / BUILD_LOG).write_text("step 1/1: debootstrap\nall done\n")
    core = RecordingCore(free_port())
    core.start()
    port = free_port()
    env = hostd_env(
        core_url=core.url,
        port=port,
        var_dir=var_dir,
        template_cache=cache,
        names=kernel_names(1),
        DNAH_HOST_RUNTIME="fake",
    )
    hostd = HostdProcess(env, port, var_dir / "hostd.log")
    try:
        hostd.start()
        registration = wait_for(lambda: core.registrations, timeout=15, what="a registration")[-1]
        headers = {"authorization": f"Bearer {registration.api_token}"}
        with httpx.Client(base_url=hostd.url, timeout=30) as http:
            served = http.get("/templates/dnah-base/build-log", headers=headers)
            assert served.status_code == 200, served.text
            assert served.headers["content-type"].startswith("text/plain")
            assert served.text.splitlines()[1:] == ["step 1/1: debootstrap", "all done"]
            assert served.text.startswith(f"# template dnah-base-{record.hash}, built ")

            missing = http.get("/templates/nope/build-log", headers=headers)
            assert missing.status_code == 404 and missing.json()["code"] == "template_not_found"
            assert http.get("/templates/dnah-base/build-log").status_code == 401
            wrong = http.get("/templates/dnah-base/build-log", headers={"authorization": "Bearer nope"})
            assert wrong.status_code == 401
        assert hostd.stop() == 0, hostd.log()
    finally:
        if hostd._proc is not None and hostd._proc.poll() is None:
            hostd.kill()
        core.close()
        shutil.rmtree(var_dir, ignore_errors=True)
