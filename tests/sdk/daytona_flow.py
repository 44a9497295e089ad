"""The official Daytona SDK, unmodified, through one sandbox's life; prints a JSON report.

Run by ``test_daytona_sdk.py`` with the SDK's own virtualenv (``tests/sdk/install.sh``), not
the project's: nothing here imports the project. The SDK is configured as a user would, with
``DAYTONA_API_URL`` and ``DAYTONA_API_KEY`` in the environment; everything else is its
default. The report holds what each call returned and how long it took, so the test can
assert on values and print timings.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from daytona import (
    CreateSandboxFromSnapshotParams,
    Daytona,
    DaytonaNotFoundError,
    FileDownloadRequest,
    FileUpload,
    SessionExecuteRequest,
)


def value(state: Any) -> str:
    """An SDK enum's wire value (``str()`` of a str-Enum differs across Python versions)."""
    return str(getattr(state, "value", state))


def main() -> int:
    report: dict[str, Any] = {"ms": {}}

    def timed(name: str, call: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        result = call()
        report["ms"][name] = round((time.perf_counter() - started) * 1000, 1)
        return result

    daytona = timed("client", Daytona)
    sandbox = timed("create", daytona.create)
    report["created"] = {"id": sandbox.id, "state": value(sandbox.state), "cpu": sandbox.cpu}

    hi = timed("exec", lambda: sandbox.process.exec("echo hi"))
    report["exec"] = {"exit_code": hi.exit_code, "result": hi.result}
    failed = sandbox.process.exec("echo out; echo err >&2; exit 3", cwd="/tmp", env={"X": "1"})
    report["exec_failed"] = {"exit_code": failed.exit_code, "result": failed.result}
    try:
        sandbox.process.exec("sleep 10", timeout=1)
        report["exec_timeout"] = "no error"
    except Exception as exc:  # the SDK's own error class is what the report shows
        report["exec_timeout"] = type(exc).__name__

    ran = timed("code_run", lambda: sandbox.process.code_run("print(6*7)"))
    report["code_run"] = {"exit_code": ran.exit_code, "result": ran.result, "charts": ran.artifacts.charts}
    timed("code_run_again", lambda: sandbox.process.code_run("print(6*7)"))
    broken = sandbox.process.code_run("import sys; print('partial'); sys.exit(4)")
    report["code_run_failed"] = {"exit_code": broken.exit_code, "result": broken.result}

    process = sandbox.process
    timed("session_create", lambda: process.create_session("dev"))
    process.execute_session_command("dev", SessionExecuteRequest(command="cd /tmp && export X=42"))
    echoed = timed(
        "session_exec",
        lambda: process.execute_session_command(
            "dev", SessionExecuteRequest(command="echo $X; pwd; echo e >&2")
        ),
    )
    report["session_exec"] = {
        "exit_code": echoed.exit_code,
        "stdout": echoed.stdout,
        "stderr": echoed.stderr,
        "output": echoed.output,
    }
    started = process.execute_session_command(
        "dev", SessionExecuteRequest(command="sleep 0.3; echo later; exit_code=0; (exit 3)", run_async=True)
    )
    report["session_async_started"] = {"has_id": bool(started.cmd_id), "exit_code": started.exit_code}
    for _ in range(200):
        polled = process.get_session_command("dev", started.cmd_id)
        if polled.exit_code is not None:
            break
        time.sleep(0.05)
    report["session_async_done"] = {"command": polled.command, "exit_code": polled.exit_code}
    logs = timed("session_logs", lambda: process.get_session_command_logs("dev", started.cmd_id))
    report["session_logs"] = {"stdout": logs.stdout, "stderr": logs.stderr, "output": logs.output}
    session = process.get_session("dev")
    report["session"] = {
        "id": session.session_id,
        "commands": [[c.command, c.exit_code] for c in session.commands or []],
    }
    report["sessions_listed"] = [s.session_id for s in process.list_sessions()]
    timed("session_delete", lambda: process.delete_session("dev"))
    report["sessions_after_delete"] = [s.session_id for s in process.list_sessions()]

    # git: a bare repository inside the sandbox stands in for a remote (sandboxes cannot
    # reach the host); cloned over file:// like any URL
    sandbox.process.exec(
        "git init -q --bare -b main /tmp/origin.git && git init -q -b main /tmp/seed && cd /tmp/seed"
        " && git -c user.name=S -c user.email=s@example.com commit -q --allow-empty -m first"
        " && git push -q /tmp/origin.git main"
    )
    git = sandbox.git
    timed("git_clone", lambda: git.clone("file:///tmp/origin.git", "repo"))
    sandbox.process.exec("cd && echo hi > repo/hi.txt")
    git.add("repo", ["hi.txt"])
    staged = timed("git_status", lambda: git.status("repo"))
    report["git_status"] = {
        "branch": staged.current_branch,
        "files": [[f.name, value(f.staging)] for f in staged.file_status],
    }
    committed = timed("git_commit", lambda: git.commit("repo", "add hi", "Ada", "ada@example.com"))
    timed("git_push", lambda: git.push("repo"))
    origin = sandbox.process.exec("git --git-dir=/tmp/origin.git log -1 --format='%H %an %s' main").result
    report["git_pushed"] = origin.strip() == f"{committed.sha} Ada add hi"
    git.create_branch("repo", "side")
    git.checkout_branch("repo", "side")
    listed = git.branches("repo")
    report["git_branches"] = {"branches": listed.branches, "current": listed.current}
    report["git_clean"] = git.status("repo").file_status == []

    # files: metadata and text operations (relative paths start at the home)
    fs = sandbox.fs
    timed("fs_create_folder", lambda: fs.create_folder("data/raw", "750"))
    sandbox.process.exec("cd && printf 'a TODO\\n' > data/raw/x.txt")
    listed_files = timed("fs_list_files", lambda: fs.list_files("data"))
    report["fs_list"] = [[f.name, f.is_dir, f.permissions, f.path] for f in listed_files]
    report["fs_list_deep"] = [f.path for f in fs.list_files("data", depth=2)]
    info = timed("fs_get_file_info", lambda: fs.get_file_info("data/raw/x.txt"))
    report["fs_info"] = {
        "name": info.name,
        "is_dir": info.is_dir,
        "size": info.size,
        "mode": info.mode,
        "permissions": info.permissions,
        "owner": info.owner,
        "has_mod_time": bool(info.mod_time),
    }
    report["fs_search"] = fs.search_files("data", "*.txt").files
    report["fs_find"] = [[m.file, m.line, m.content] for m in fs.find_files("data", "TODO")]
    fs.move_files("data/raw/x.txt", "data/y.txt")
    fs.set_file_permissions("data/y.txt", mode="600")
    replaced = fs.replace_in_files(["data/y.txt"], "TODO", "DONE")
    report["fs_replace"] = [[r.file, r.success] for r in replaced]
    report["fs_after"] = sandbox.process.exec("cd && stat -c %a data/y.txt && cat data/y.txt").result

    # files: byte streams (multipart bulk-upload / bulk-download under the SDK's calls)
    payload = bytes(range(256)) * 4096 + b"tail"  # 1 MiB and 4 bytes, every byte value
    timed("fs_upload_file", lambda: fs.upload_file(payload, "data/up/blob.bin"))
    report["fs_uploaded_sha"] = sandbox.process.exec("cd && sha256sum data/up/blob.bin").result.split()[0]
    report["fs_expected_sha"] = hashlib.sha256(payload).hexdigest()
    downloaded = timed("fs_download_file", lambda: fs.download_file("data/up/blob.bin"))
    report["fs_download_matches"] = downloaded == payload
    try:
        fs.download_file("data/nope")
        report["fs_download_missing"] = "no error"
    except DaytonaNotFoundError:
        report["fs_download_missing"] = "not found"
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / "local.txt"
        local.write_text("from disk\n")
        fs.upload_files(
            [
                FileUpload(source=str(local), destination="data/bulk/a.txt"),
                FileUpload(source=b"from bytes\n", destination="data/bulk/deeper/b.txt"),
            ]
        )
        out = Path(tmp) / "out" / "a.txt"
        results = fs.download_files(
            [
                FileDownloadRequest(source="data/bulk/a.txt", destination=str(out)),
                FileDownloadRequest(source="data/bulk/deeper/b.txt"),
                FileDownloadRequest(source="data/bulk/missing.txt"),
            ]
        )
        report["fs_bulk"] = [
            [
                r.source,
                "file" if isinstance(r.result, str) else r.result and r.result.decode(),
                r.error is not None,
            ]
            for r in results
        ]
        report["fs_bulk_local"] = out.read_text()

    fs.delete_file("data", recursive=True)
    report["fs_deleted"] = sandbox.process.exec("cd && test -e data || echo gone").result

    report["home"] = timed("home", sandbox.get_user_home_dir)
    report["work"] = sandbox.get_work_dir()

    js = daytona.create(CreateSandboxFromSnapshotParams(language="javascript"))
    js_run = js.process.code_run("console.log([1, 2].map((n) => n * 21).join(' '))")
    report["js_code_run"] = {"exit_code": js_run.exit_code, "result": js_run.result}

    got = timed("get", lambda: daytona.get(sandbox.id))
    report["get"] = {"id": got.id, "state": value(got.state)}
    report["list"] = sorted(s.id for s in timed("list", lambda: list(daytona.list())))

    timed("delete", sandbox.delete)
    daytona.delete(js)
    report["after_delete"] = value(daytona.get(sandbox.id).state)
    report["js_after_delete"] = value(daytona.get(js.id).state)
    json.dump(report, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
