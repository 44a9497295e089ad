"""The official E2B Python SDK (``e2b`` 2.63.0), unmodified, through a sandbox's life; prints a
JSON report (``flow_report.Report``: each step's outcome or the error it met, and its time).

Run by ``test_e2b_sdk.py`` with the SDKs' own virtualenv (``install.sh requirements-e2b.txt``);
nothing here imports the project. The SDK is configured as a user would: ``E2B_API_URL``,
``E2B_SANDBOX_URL`` and ``E2B_API_KEY`` in the environment. Two more variables are the test's:
``DNAH_FLOW_RUN`` (a word unique to the run, put in metadata so ``list`` can filter on it) and,
when the stack serves ``{port}-{id}.{domain}`` hosts, ``E2B_DOMAIN`` plus ``DNAH_HOST_PROXY``
(where such hosts are served: this machine has no wildcard DNS, so the request goes there with
the host in its ``Host`` header, as DNS would have sent it).
"""

from __future__ import annotations

import os
import sys
from typing import Any

import httpx
from e2b import CommandExitException, PtySize, Sandbox, SandboxQuery
from flow_report import Report, wait_for

SERVER_PORT = 8000
SITE = "/tmp/e2b-site"


def main() -> int:
    """Run the groups named on the command line, each on a sandbox of its own."""
    report = Report()
    run = os.environ["DNAH_FLOW_RUN"]
    for group in sys.argv[1:]:
        sbx: Sandbox | None = report.step(
            "create",
            lambda group=group: Sandbox.create(
                metadata={"run": run, "group": group}, envs={"FROM_CREATE": "yes"}, timeout=600
            ),
            shown=lambda created: {"created": True},
        )
        if sbx is None:
            continue
        try:
            report.step("info", lambda sbx=sbx: info(sbx))
            GROUPS[group](report, sbx, run)
        finally:
            if group != "lifecycle":
                report.step("cleanup", sbx.kill)
    report.print()
    return 0


def info(sbx: Sandbox) -> dict[str, Any]:
    got = sbx.get_info()
    return {
        "metadata": got.metadata,
        "state": str(getattr(got.state, "value", got.state)),
        "same_id": got.sandbox_id == sbx.sandbox_id,
    }


def commands(report: Report, sbx: Sandbox, run: str) -> None:
    cmd = sbx.commands
    report.step("env_from_create", lambda: cmd.run("echo $FROM_CREATE").stdout)

    def run() -> dict[str, Any]:
        done = cmd.run("echo hi; echo err >&2")
        return {"stdout": done.stdout, "stderr": done.stderr, "exit_code": done.exit_code}

    report.step("run", run)

    def exit_code() -> dict[str, Any]:
        try:
            cmd.run("echo out; echo bad >&2; exit 3")
        except CommandExitException as exc:
            return {"raised": True, "exit_code": exc.exit_code, "stdout": exc.stdout, "stderr": exc.stderr}
        return {"raised": False}

    report.step("run_nonzero", exit_code)

    def streaming() -> dict[str, Any]:
        # "second" is printed only if /tmp/go appears, which on_stdout writes on seeing
        # "first": the output must reach the client while the command still runs.
        chunks: list[str] = []

        def on_stdout(text: str) -> None:
            chunks.append(text)
            if "first" in text:
                sbx.files.write("/tmp/go", "")

        done = cmd.run(
            "rm -f /tmp/go; echo first; for i in $(seq 300); do [ -e /tmp/go ] && break; sleep 0.1; done;"
            " [ -e /tmp/go ] && echo second || echo late",
            on_stdout=on_stdout,
        )
        return {"stdout": done.stdout, "streamed": "".join(chunks)}

    report.step("run_on_stdout", streaming)
    report.step(
        "run_cwd_envs", lambda: cmd.run("pwd; echo $A$B", cwd="/tmp", envs={"A": "1", "B": "2"}).stdout
    )

    def timeout() -> dict[str, Any]:
        try:
            cmd.run("sleep 30", timeout=1)
        except Exception as exc:
            return {"raised": type(exc).__name__}
        return {"raised": None}

    report.step("run_timeout", timeout)
    report.step("background_kill_list", lambda: background(sbx))

    def stdin() -> dict[str, Any]:
        handle = cmd.run("read line; echo got:$line", background=True, stdin=True)
        cmd.send_stdin(handle.pid, "hello\n")
        return {"stdout": handle.wait().stdout}

    report.step("send_stdin", stdin)
    report.step("run_as_root", lambda: cmd.run("id -un; pwd; echo $HOME", user="root").stdout)
    report.step("root_background_kill", lambda: root_background(sbx))


def root_background(sbx: Sandbox) -> dict[str, Any]:
    """A background command of another account (through sudo in the sandbox) is killed with
    its session: nothing of it is left (``slee[p]``: the pattern does not match the pgrep's
    own shell)."""
    handle = sbx.commands.run("sleep 301", background=True, user="root", timeout=0)
    killed = handle.kill()
    wait_for(
        lambda: sbx.commands.run("pgrep -f 'slee[p] 301' || true").stdout == "",
        what="the root command and its sudo to be gone",
    )
    return {"killed": killed, "gone": True}


def background(sbx: Sandbox) -> dict[str, Any]:
    handle = sbx.commands.run("sleep 300", background=True, timeout=0)
    listed = {p.pid: p for p in sbx.commands.list()}
    mine = listed.get(handle.pid)
    killed = handle.kill()
    wait_for(
        lambda: handle.pid not in {p.pid for p in sbx.commands.list()},
        what="the killed command to leave the list",
    )
    return {
        "listed": mine is not None,
        "cmd": [mine.cmd, mine.args] if mine else None,
        "killed": killed,
        "kill_again": sbx.commands.kill(handle.pid),
    }


def files(report: Report, sbx: Sandbox, run: str) -> None:
    fs = sbx.files

    def write_read() -> dict[str, Any]:
        wrote = fs.write("/tmp/e2b/dir/a.txt", "alpha\n")
        fs.write("/tmp/e2b/dir/b.bin", b"\x00\x01\xff")
        return {
            "wrote": [wrote.name, wrote.path],
            "text": fs.read("/tmp/e2b/dir/a.txt"),
            "bytes": list(fs.read("/tmp/e2b/dir/b.bin", format="bytes")),
        }

    report.step("files_write_read", write_read)
    report.step(
        "files_list",
        lambda: sorted(
            [e.name, str(e.type.value if e.type else None), e.size] for e in fs.list("/tmp/e2b/dir")
        ),
    )
    report.step("files_exists", lambda: [fs.exists("/tmp/e2b/dir/a.txt"), fs.exists("/tmp/e2b/dir/nope")])
    report.step(
        "files_make_dir", lambda: [fs.make_dir("/tmp/e2b/made/deep"), fs.make_dir("/tmp/e2b/made/deep")]
    )

    def rename_remove() -> dict[str, Any]:
        moved = fs.rename("/tmp/e2b/dir/a.txt", "/tmp/e2b/dir/c.txt")
        fs.remove("/tmp/e2b/dir/c.txt")
        return {
            "moved": moved.path,
            "after": [fs.exists("/tmp/e2b/dir/a.txt"), fs.exists("/tmp/e2b/dir/c.txt")],
        }

    report.step("files_rename_remove", rename_remove)

    def missing() -> str:
        try:
            fs.read("/tmp/e2b/nope.txt")
        except Exception as exc:
            return type(exc).__name__
        return "no error"

    report.step("files_read_missing", missing)

    def several() -> dict[str, Any]:
        wrote = fs.write_files(
            [{"path": "/tmp/e2b/many/1.txt", "data": "one"}, {"path": "/tmp/e2b/many/2.txt", "data": "two"}]
        )
        info = fs.get_info("/tmp/e2b/many/2.txt")
        return {
            "paths": [w.path for w in wrote],
            "info": [info.name, info.type.value if info.type else None, info.size],
        }

    report.step("files_write_files_get_info", several)


def watch(report: Report, sbx: Sandbox, run: str) -> None:
    fs = sbx.files

    def new_file() -> list[list[str]]:
        fs.make_dir("/tmp/e2b/watched")
        handle = fs.watch_dir("/tmp/e2b/watched")
        fs.write("/tmp/e2b/watched/new.txt", "x")
        seen: list[list[str]] = []

        def arrived() -> bool:
            seen.extend([e.name, e.type.value] for e in handle.get_new_events())
            return ["new.txt", "create"] in seen

        wait_for(arrived, what="a create event for new.txt")
        handle.stop()
        # A write event may follow the create in the same poll or a later one: only the
        # create is certain.
        return sorted({tuple(e) for e in seen if e == ["new.txt", "create"]})

    report.step("files_watch_dir", new_file)


def pty(report: Report, sbx: Sandbox, run: str) -> None:
    def session() -> dict[str, Any]:
        handle = sbx.pty.create(PtySize(rows=24, cols=80), timeout=120)
        stream = iter(handle)  # one generator: a for loop over it stops without closing it
        text = ""

        def until(marker: str) -> str:
            nonlocal text
            for _, _, out in stream:
                if out is not None:
                    text += out.decode(errors="replace")
                if marker in text:
                    return text
            raise AssertionError(f"the PTY ended before {marker!r}: {text!r}")

        sbx.pty.send_stdin(handle.pid, b"echo A-$((1+1)); stty size; echo B-$((2+2))\n")
        first = until("B-4")
        sbx.pty.resize(handle.pid, PtySize(rows=30, cols=100))
        sbx.pty.send_stdin(handle.pid, b"stty size; echo C-$((3+3))\n")
        second = until("C-6")[len(first) :]
        killed = sbx.pty.kill(handle.pid)
        wait_for(
            lambda: handle.pid not in {p.pid for p in sbx.commands.list()},
            what="the killed PTY to leave the list",
        )
        return {
            "first_size": "24 80" in first,
            "resized": "30 100" in second,
            "killed": killed,
            "kill_again": sbx.pty.kill(handle.pid),
        }

    report.step("pty", session)


def start_server(sbx: Sandbox) -> None:
    sbx.files.write(f"{SITE}/hello.txt", "hello from the sandbox\n")
    sbx.commands.run(f"python3 -m http.server {SERVER_PORT} --directory {SITE}", background=True, timeout=0)


def port_by_headers(sbx: Sandbox) -> dict[str, Any]:
    """A server in the sandbox reached as the SDK reaches envd: the sandbox URL, with the
    sandbox and port named in E2B's headers."""
    start_server(sbx)
    url = os.environ["E2B_SANDBOX_URL"].rstrip("/") + "/hello.txt"
    headers = {"E2b-Sandbox-Id": sbx.sandbox_id, "E2b-Sandbox-Port": str(SERVER_PORT)}
    got = wait_for(
        lambda: (r := httpx.get(url, headers=headers, timeout=30)).status_code == 200 and r,
        what="the server in the sandbox to answer",
    )
    return {"status": got.status_code, "body": got.text}


def get_host(sbx: Sandbox) -> dict[str, Any]:
    host = sbx.get_host(SERVER_PORT)
    url = os.environ["DNAH_HOST_PROXY"].rstrip("/") + "/hello.txt"
    got = wait_for(
        lambda: (r := httpx.get(url, headers={"host": host}, timeout=30)).status_code == 200 and r,
        what=f"the server in the sandbox to answer at {host}",
    )
    return {"host": host == f"{SERVER_PORT}-{sbx.sandbox_id}.{os.environ['E2B_DOMAIN']}", "body": got.text}


def ports(report: Report, sbx: Sandbox, run: str) -> None:
    report.step("port_by_headers", lambda: port_by_headers(sbx))
    if os.environ.get("DNAH_HOST_PROXY"):
        report.step("get_host", lambda: get_host(sbx))


def lifecycle(report: Report, sbx: Sandbox, run: str) -> None:
    report.step("list_by_metadata", lambda: list_by_metadata(sbx, run))
    report.step("set_timeout", lambda: set_timeout(run))
    report.step("kill", lambda: kill(sbx))


def pause(report: Report, sbx: Sandbox, run: str) -> None:
    report.step("pause_connect", lambda: pause_connect(sbx))


def list_by_metadata(sbx: Sandbox, run: str) -> dict[str, Any]:
    mine = Sandbox.list(query=SandboxQuery(metadata={"run": run, "group": "lifecycle"})).next_items()
    none = Sandbox.list(query=SandboxQuery(metadata={"run": run, "group": "nobody"})).next_items()
    return {
        "ids": [s.sandbox_id == sbx.sandbox_id for s in mine],
        "metadata": [s.metadata for s in mine],
        "none": len(none),
    }


def pause_connect(sbx: Sandbox) -> dict[str, Any]:
    sbx.files.write("/tmp/e2b/kept.txt", "kept\n")
    sleeper = sbx.commands.run("sleep 900", background=True, timeout=0)
    paused = sbx.pause()
    state = str(getattr(sbx.get_info().state, "value", sbx.get_info().state))
    again = Sandbox.connect(sbx.sandbox_id)
    return {
        "paused": paused,
        "state": state,
        "file": again.files.read("/tmp/e2b/kept.txt"),
        "process": sleeper.pid in {p.pid for p in again.commands.list()},
        "runs": again.commands.run("echo back").stdout,
        "state_after": str(getattr(again.get_info().state, "value", again.get_info().state)),
    }


def set_timeout(run: str) -> dict[str, Any]:
    short = Sandbox.create(metadata={"run": run, "group": "short"}, timeout=600)
    short.set_timeout(3)

    def gone() -> bool:
        return not any(
            s.sandbox_id == short.sandbox_id
            for s in Sandbox.list(query=SandboxQuery(metadata={"run": run})).next_items()
        )

    wait_for(gone, what="the sandbox to be killed at its deadline", timeout_s=120)
    return {"killed_at_deadline": True, "kill_after": Sandbox.kill(short.sandbox_id)}


def kill(sbx: Sandbox) -> dict[str, Any]:
    first = sbx.kill()
    try:
        sbx.get_info()
        after = "still there"
    except Exception as exc:
        after = type(exc).__name__
    return {"killed": first, "kill_again": Sandbox.kill(sbx.sandbox_id), "info_after": after}


GROUPS = {
    "commands": commands,
    "files": files,
    "watch": watch,
    "pty": pty,
    "ports": ports,
    "lifecycle": lifecycle,
    "pause": pause,
}

if __name__ == "__main__":
    raise SystemExit(main())
