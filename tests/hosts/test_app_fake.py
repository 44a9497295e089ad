"""hostd started with ``DNAH_HOST_RUNTIME=fake``: it runs, says so, and serves sandboxes
without root (what lets the core's suites use a hostd that needs no root)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import httpx

from tests.hosts._hostd_fixtures import (
    HostdProcess,
    RecordingCore,
    free_port,
    hostd_env,
    kernel_names,
    wait_for,
)


def test_hostd_serves_sandboxes_on_the_fake_runtime() -> None:
    # Under /tmp and short: agent sockets live in the state dir (108-byte path limit).
    var_dir = Path(tempfile.mkdtemp(prefix="dnah-hf-", dir="/tmp"))
    core = RecordingCore(free_port())
    core.start()
    port = free_port()
    env = hostd_env(
        core_url=core.url,
        port=port,
        var_dir=var_dir,
        template_cache=var_dir / "no-templates",
        names=kernel_names(1),
        DNAH_HOST_RUNTIME="fake",
    )
    hostd = HostdProcess(env, port, var_dir / "hostd.log")
    try:
        hostd.start()
        registration = wait_for(lambda: core.registrations, timeout=15, what="a registration")[-1]
        assert registration.templates == ["dnah-base"]
        assert "NOT isolated" in hostd.log()
        headers = {"authorization": f"Bearer {registration.api_token}"}
        with httpx.Client(base_url=hostd.url, headers=headers, timeout=30) as http:
            spec = {"id": "fake1", "template": "dnah-base", "cpu": 1, "ram_mb": 256, "disk_gb": 1}
            created = http.post("/sandboxes", json=spec)
            assert created.status_code == 200, created.text
            assert created.json()["state"] == "running"
            ran = http.post("/sandboxes/fake1/exec", json={"cmd": ["sh", "-c", "echo hi > f; cat f"]})
            assert ran.status_code == 200, ran.text
            assert ran.json()["stdout"] == "hi\n"
            assert http.get("/health").json()["runtime"] == "fake"
            assert http.delete("/sandboxes/fake1").status_code == 204
            assert http.get("/sandboxes").json() == []
        assert hostd.stop() == 0, hostd.log()
    finally:
        if hostd._proc is not None and hostd._proc.poll() is None:
            hostd.kill()  # a failed assertion left it running
        core.close()
        shutil.rmtree(var_dir, ignore_errors=True)
