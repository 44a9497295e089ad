"""In-sandbox operations beyond exec, end to end through the gateway, core, hostd's agent
relay and the guest agent: run-code, dirs, metrics (both API shapes), and activity."""

from __future__ import annotations

import time
from datetime import datetime

import httpx
import pytest


def create(client: httpx.Client, **body: object) -> dict:
    resp = client.post("/v1/sandboxes", json=body)
    assert resp.status_code == 201, resp.text
    return resp.json()


def run_code(client: httpx.Client, sid: str, **body: object) -> dict:
    resp = client.post(f"/v1/sandboxes/{sid}/run-code", json=body)
    assert resp.status_code == 200, resp.text
    return resp.json()


def metrics(client: httpx.Client, sid: str) -> dict:
    resp = client.get(f"/v1/sandboxes/{sid}/metrics")
    assert resp.status_code == 200, resp.text
    return resp.json()


def stamp(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


# run-code -----------------------------------------------------------------------------------


def test_run_code_in_each_language(org: httpx.Client) -> None:
    sid = create(org)["id"]
    cases = {
        "python": "import sys; print(6 * 7); print('oops', file=sys.stderr); sys.exit(3)",
        "bash": "echo $((6 * 7)); echo oops >&2; exit 3",
        "javascript": "console.log(6 * 7); console.error('oops'); process.exit(3)",
        "typescript": "console.log(6 * 7); console.error('oops'); process.exit(3)",
    }
    for lang, code in cases.items():
        out = run_code(org, sid, code=code, lang=lang)
        assert (out["stdout"], out["stderr"], out["exit_code"], out["timed_out"]) == (
            "42\n",
            "oops\n",
            3,
            False,
        ), lang
        assert out["duration_ms"] > 0

    ok = run_code(org, sid, code="import os; print(os.environ['X'], os.getcwd())", env={"X": "y"}, cwd="/tmp")
    assert (ok["stdout"], ok["exit_code"]) == ("y /tmp\n", 0)
    args = run_code(org, sid, code='echo "$@"', lang="bash", argv=["a", "b c"])
    assert args["stdout"] == "a b c\n"


def test_run_code_language_falls_back_to_the_sandbox_s(org: httpx.Client) -> None:
    default = create(org)  # language defaults to python
    assert default["language"] == "python"
    assert run_code(org, default["id"], code="print('py')")["stdout"] == "py\n"
    bash = create(org, language="bash")
    assert run_code(org, bash["id"], code="echo $BASH_VERSION | cut -c1")["stdout"].strip().isdigit()
    js = create(org, language="javascript")
    assert run_code(org, js["id"], code="console.log(typeof process)")["stdout"] == "object\n"


def test_run_code_timeout_is_a_result_natively_and_408_for_daytona(org: httpx.Client) -> None:
    sid = create(org)["id"]
    started = time.monotonic()
    out = run_code(org, sid, code="import time; time.sleep(30)", timeout_ms=500)
    assert (out["timed_out"], out["exit_code"]) == (True, -9)
    assert time.monotonic() - started < 5

    resp = org.post(
        f"/toolbox/{sid}/process/code-run", json={"code": "sleep 30", "language": "bash", "timeout": 1}
    )
    assert resp.status_code == 408 and resp.json()["code"] == "timeout"
    # the process group was killed: nothing of the snippet is left running
    left = org.post(f"/v1/sandboxes/{sid}/exec", json={"cmd": ["sh", "-c", "pgrep -c sleep || true"]}).json()
    assert left["stdout"].strip() == "0"


def test_run_code_refusals(org: httpx.Client) -> None:
    sid = create(org)["id"]
    for body, needle in (
        ({"code": "x", "lang": "cobol"}, "language"),
        ({"code": 1}, "code"),
        ({}, "code"),
        ({"code": "x", "timeout_ms": 0}, "timeout_ms"),
        ({"code": "x", "bogus": 1}, "bogus"),
        ({"code": "print('\x00')"}, "null"),
    ):
        resp = org.post(f"/v1/sandboxes/{sid}/run-code", json=body)
        assert resp.status_code == 400, (body, resp.text)
        assert needle in resp.json()["message"], (body, resp.json())
    assert org.post("/v1/sandboxes/nope/run-code", json={"code": "1"}).status_code == 404


def test_daytona_code_run(org: httpx.Client) -> None:
    sbx = org.post("/sandbox", json={"labels": {"code-toolbox-language": "javascript"}}).json()
    assert sbx["labels"]["code-toolbox-language"] == "javascript"
    sid = sbx["id"]
    for path in (f"/toolbox/{sid}/process/code-run", f"/sandbox/{sid}/toolbox/process/code-run"):
        resp = org.post(
            path,
            json={
                "code": "console.log(process.argv.slice(1).join(','), process.env.E); console.error('e')",
                "argv": ["a", "b"],
                "envs": {"E": "env"},
            },
        )
        assert resp.status_code == 200, resp.text
        assert resp.json() == {"exitCode": 0, "result": "a,b env\ne\n", "artifacts": {"charts": []}}
    py = org.post(
        f"/toolbox/{sid}/process/code-run", json={"code": "raise SystemExit(5)", "language": "python"}
    )
    assert py.json()["exitCode"] == 5
    nulls = org.post(
        f"/toolbox/{sid}/process/code-run",
        json={
            "code": "console.log(1)",
            "language": "javascript",
            "argv": None,
            "envs": None,
            "timeout": None,
        },
    )
    assert nulls.json()["result"] == "1\n"


# dirs ---------------------------------------------------------------------------------------


def test_dirs_in_both_shapes(org: httpx.Client) -> None:
    sid = create(org)["id"]
    assert org.get(f"/v1/sandboxes/{sid}/dirs").json() == {
        "home": "/home/daytona",
        "work": "/home/daytona",
        "project": "/workspace",
    }
    for route, expected in (
        ("user-home-dir", "/home/daytona"),
        ("work-dir", "/home/daytona"),
        ("project-dir", "/workspace"),
    ):
        for path in (f"/toolbox/{sid}/{route}", f"/sandbox/{sid}/toolbox/{route}"):
            resp = org.get(path)
            assert resp.status_code == 200, resp.text
            assert resp.json() == {"dir": expected}
    assert org.get("/v1/sandboxes/nope/dirs").status_code == 404


# metrics ------------------------------------------------------------------------------------


def test_metrics_reflect_the_sandbox_s_limits_and_use(org: httpx.Client) -> None:
    sbx = create(org, cpu=2, ram_mb=512)
    sid = sbx["id"]
    first = metrics(org, sid)
    assert set(first) == {
        "cpu_count",
        "mem_total_mb",
        "mem_used_mb",
        "load_1m",
        "disk_used_mb",
        "age_seconds",
        "state",
        "last_activity_at",
    }
    assert (first["cpu_count"], first["mem_total_mb"], first["state"]) == (2, 512, "started")
    assert 0 <= first["age_seconds"] < 60
    assert first["load_1m"] >= 0
    assert first["mem_used_mb"] < 100

    hold = "import time; b = b'x' * (100 << 20); time.sleep(60)"
    spawned = org.post(
        f"/v1/sandboxes/{sid}/exec", json={"cmd": ["sh", "-c", f'python3 -c "{hold}" >/dev/null 2>&1 &']}
    )
    assert spawned.status_code == 200 and spawned.json()["exit_code"] == 0
    deadline = time.monotonic() + 15
    while (now := metrics(org, sid))["mem_used_mb"] < first["mem_used_mb"] + 95:
        assert time.monotonic() < deadline, now
        time.sleep(0.2)
    assert now["mem_used_mb"] <= 512

    wrote = org.post(
        f"/v1/sandboxes/{sid}/exec", json={"cmd": ["dd", "if=/dev/urandom", "of=blob", "bs=1M", "count=20"]}
    )
    assert wrote.json()["exit_code"] == 0, wrote.text
    assert metrics(org, sid)["disk_used_mb"] >= first["disk_used_mb"] + 20

    other = create(org, cpu=1, ram_mb=256)
    assert (metrics(org, other["id"])["cpu_count"], metrics(org, other["id"])["mem_total_mb"]) == (1, 256)
    assert org.get("/v1/sandboxes/nope/metrics").status_code == 404


# activity -----------------------------------------------------------------------------------


def test_activity_moves_with_exec_run_code_and_metrics_only(org: httpx.Client) -> None:
    sbx = create(org)
    sid = sbx["id"]

    def last() -> datetime:
        return stamp(org.get(f"/v1/sandboxes/{sid}").json()["last_activity_at"])

    created = stamp(sbx["last_activity_at"])
    time.sleep(1.2)
    org.get(f"/v1/sandboxes/{sid}")
    org.get("/v1/sandboxes")
    org.get("/sandbox")
    org.get(f"/sandbox/{sid}")
    org.get(f"/v1/sandboxes/{sid}/dirs")
    assert last() == created, "reads, listings and dirs are not activity"

    assert org.post(f"/v1/sandboxes/{sid}/exec", json={"cmd": ["true"]}).status_code == 200
    after_exec = last()
    assert after_exec > created
    # within the granularity (1 s) further calls do not write the row again
    org.post(f"/v1/sandboxes/{sid}/exec", json={"cmd": ["true"]})
    assert last() == after_exec

    time.sleep(1.2)
    run_code(org, sid, code="pass")
    after_code = last()
    assert after_code > after_exec

    time.sleep(1.2)
    reported = metrics(org, sid)["last_activity_at"]
    after_metrics = last()
    assert after_metrics > after_code
    assert stamp(reported) == after_metrics

    time.sleep(1.2)
    org.post(f"/toolbox/{sid}/process/execute", json={"command": "true"})
    assert last() > after_metrics


@pytest.mark.parametrize("route", ["run-code", "dirs", "metrics"])
def test_destroyed_sandboxes_are_404(org: httpx.Client, route: str) -> None:
    sid = create(org)["id"]
    assert org.delete(f"/v1/sandboxes/{sid}").status_code == 200
    if route == "run-code":
        resp = org.post(f"/v1/sandboxes/{sid}/run-code", json={"code": "1"})
    else:
        resp = org.get(f"/v1/sandboxes/{sid}/{route}")
    assert resp.status_code == 404
