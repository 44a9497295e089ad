"""Git inside a sandbox, end to end (gateway → core → hostd's relay → agent → the sandbox's own
git), in both API shapes, with every result checked against the repositories themselves.

Where the remotes live. A sandbox cannot reach the host by design (the bridge drops its
traffic to the host, see ``tests/stack/test_isolation.py``), and tests stay off the network,
so every remote lives *inside* the sandbox under test:

* ``/tmp/origin.git``, a bare repository cloned as ``file:///tmp/origin.git`` (``file://``
  rather than a plain path so that ``depth`` is honoured, as for a network remote);
* for the credential path, the same kind of bare repository served over smart HTTP by
  ``git http-backend`` behind a small Python server that demands Basic auth, listening on
  127.0.0.1 in the sandbox's own network namespace. The server knows only the SHA-256 of
  ``user:password``, so the password appears nowhere on the sandbox's disk unless dnah
  writes it there, which is what ``test_credentials_are_used_but_never_stored`` checks: after
  a clone and a push with credentials, no file of the sandbox (its whole writable layer, which
  holds the clone's ``.git/config``), no console log of its agent and no log of the stack
  contains the password.
"""

from __future__ import annotations

import hashlib
import secrets
import subprocess
import textwrap
import time
from datetime import datetime

import httpx
import pytest

from cli.stack import Stack

ORIGIN = "file:///tmp/origin.git"
SEED = """
set -e
export GIT_AUTHOR_DATE=2026-01-01T00:00:00Z GIT_COMMITTER_DATE=2026-01-01T00:00:00Z
git init -q --bare -b main /tmp/origin.git
git init -q -b main /tmp/seed
cd /tmp/seed
git config user.name Seed
git config user.email seed@example.com
git commit -q --allow-empty -m one
echo hello > README
git add README
git commit -q -m two
git commit -q --allow-empty -m three
git push -q /tmp/origin.git main
git checkout -q -b feature
echo feature > FEATURE
git add FEATURE
git commit -q -m feature
git push -q /tmp/origin.git feature
git checkout -q main
"""

SERVER = r"""
import base64, hashlib, http.server, os, subprocess, sys

ROOT, EXPECTED, PORT = sys.argv[1], sys.argv[2], int(sys.argv[3])


class Handler(http.server.BaseHTTPRequestHandler):
    def serve(self):
        auth = self.headers.get("Authorization", "")
        given = base64.b64decode(auth[6:]) if auth.startswith("Basic ") else b""
        if hashlib.sha256(given).hexdigest() != EXPECTED:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="git"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        path, _, query = self.path.partition("?")
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        env = dict(
            os.environ,
            GIT_PROJECT_ROOT=ROOT,
            GIT_HTTP_EXPORT_ALL="1",
            REQUEST_METHOD=self.command,
            PATH_INFO=path,
            QUERY_STRING=query,
            CONTENT_TYPE=self.headers.get("Content-Type", ""),
            CONTENT_LENGTH=str(len(body)),
            HTTP_CONTENT_ENCODING=self.headers.get("Content-Encoding", ""),
            GIT_PROTOCOL=self.headers.get("Git-Protocol", ""),
            REMOTE_USER="tester",
            REMOTE_ADDR="127.0.0.1",
        )
        out = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True).stdout
        sep = b"\r\n\r\n" if b"\r\n\r\n" in out else b"\n\n"
        head, _, rest = out.partition(sep)
        status, headers = 200, []
        for line in head.decode().splitlines():
            key, _, value = line.partition(":")
            if key.lower() == "status":
                status = int(value.split()[0])
            elif key:
                headers.append((key, value.strip()))
        self.send_response(status)
        for key, value in headers:
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(rest)))
        self.end_headers()
        self.wfile.write(rest)

    do_GET = do_POST = serve


http.server.ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
"""


def create(client: httpx.Client) -> str:
    resp = client.post("/v1/sandboxes", json={})
    assert resp.status_code == 201, resp.text
    return str(resp.json()["id"])


def sh(client: httpx.Client, sid: str, script: str) -> str:
    resp = client.post(f"/v1/sandboxes/{sid}/exec", json={"cmd": ["sh", "-c", script]})
    assert resp.status_code == 200, resp.text
    out = resp.json()
    assert out["exit_code"] == 0, out
    return str(out["stdout"])


def ok(resp: httpx.Response, status: int = 200) -> dict:
    assert resp.status_code == status, resp.text
    return resp.json() if resp.content else {}


@pytest.fixture
def sandbox(org: httpx.Client) -> str:
    """A sandbox holding ``/tmp/origin.git``: main (one, two, three) and feature (+1)."""
    sid = create(org)
    sh(org, sid, SEED)
    return sid


def test_native_git_flow(org: httpx.Client, sandbox: str) -> None:
    sid = sandbox
    base = f"/v1/sandboxes/{sid}/git"
    assert ok(org.post(f"{base}/clone", json={"url": ORIGIN, "path": "repo"})) == {"ok": True}
    home = sh(org, sid, "echo $HOME").strip()
    assert sh(org, sid, f"cat {home}/repo/README") == "hello\n"  # relative paths start at home

    log = ok(org.get(f"{base}/log", params={"path": "repo"}))["commits"]
    assert [c["message"] for c in log] == ["three", "two", "one"]
    assert (log[0]["author_name"], log[0]["author_email"]) == ("Seed", "seed@example.com")
    assert log[0]["timestamp"].startswith("2026-01-01T00:00:00")
    assert len(ok(org.get(f"{base}/log", params={"path": "repo", "limit": 2}))["commits"]) == 2

    status = ok(org.get(f"{base}/status", params={"path": "repo"}))
    assert status == {
        "branch": "main",
        "detached": False,
        "upstream": "origin/main",
        "ahead": 0,
        "behind": 0,
        "files": [],
    }

    sh(org, sid, "cd ~/repo && echo new > new.txt && echo changed >> README")
    status = ok(org.get(f"{base}/status", params={"path": "repo"}))
    assert sorted((f["path"], f["staging"], f["worktree"]) for f in status["files"]) == [
        ("README", "unmodified", "modified"),
        ("new.txt", "untracked", "untracked"),
    ]
    assert ok(org.post(f"{base}/add", json={"path": "repo", "files": ["new.txt", "README"]})) == {"ok": True}
    status = ok(org.get(f"{base}/status", params={"path": "repo"}))
    assert sorted((f["path"], f["staging"], f["worktree"]) for f in status["files"]) == [
        ("README", "modified", "unmodified"),
        ("new.txt", "added", "unmodified"),
    ]

    sha = ok(
        org.post(
            f"{base}/commit",
            json={
                "path": "repo",
                "message": "add new",
                "author_name": "Ada",
                "author_email": "ada@example.com",
            },
        )
    )["sha"]
    assert len(sha) == 40
    head = ok(org.get(f"{base}/log", params={"path": "repo", "limit": 1}))["commits"][0]
    assert (head["sha"], head["message"], head["author_name"], head["author_email"]) == (
        sha,
        "add new",
        "Ada",
        "ada@example.com",
    )
    status = ok(org.get(f"{base}/status", params={"path": "repo"}))
    assert (status["files"], status["ahead"]) == ([], 1)

    assert ok(org.post(f"{base}/push", json={"path": "repo"})) == {"ok": True}
    assert sh(org, sid, "git --git-dir=/tmp/origin.git rev-parse main").strip() == sha
    assert ok(org.get(f"{base}/status", params={"path": "repo"}))["ahead"] == 0

    # branches: create, list, check out, delete
    assert ok(org.post(f"{base}/branches", json={"path": "repo", "name": "topic"}), 201) == {"ok": True}
    assert ok(org.get(f"{base}/branches", params={"path": "repo"})) == {
        "branches": ["main", "topic"],
        "current": "main",
    }
    ok(org.post(f"{base}/checkout", json={"path": "repo", "ref": "topic"}))
    assert ok(org.get(f"{base}/branches", params={"path": "repo"}))["current"] == "topic"
    ok(org.post(f"{base}/checkout", json={"path": "repo", "ref": "feature"}))  # only origin has it
    assert sh(org, sid, "cat ~/repo/FEATURE") == "feature\n"
    branches = ok(org.get(f"{base}/branches", params={"path": "repo"}))
    assert branches == {"branches": ["feature", "main", "topic"], "current": "feature"}
    ok(org.delete(f"{base}/branches/topic", params={"path": "repo"}))
    assert ok(org.get(f"{base}/branches", params={"path": "repo"}))["branches"] == ["feature", "main"]
    ok(org.post(f"{base}/checkout", json={"path": "repo", "ref": sha}))
    status = ok(org.get(f"{base}/status", params={"path": "repo"}))
    assert (status["detached"], status["branch"]) == (True, "")
    assert ok(org.get(f"{base}/branches", params={"path": "repo"}))["current"] == ""
    ok(org.post(f"{base}/checkout", json={"path": "repo", "ref": "main"}))

    # pull: someone else pushes to origin
    sh(
        org,
        sid,
        "cd /tmp/seed && git pull -q /tmp/origin.git main && git commit -q --allow-empty -m upstream"
        " && git push -q /tmp/origin.git main",
    )
    assert ok(org.post(f"{base}/pull", json={"path": "repo"})) == {"ok": True}
    assert (
        ok(org.get(f"{base}/log", params={"path": "repo", "limit": 1}))["commits"][0]["message"] == "upstream"
    )


def test_clone_options(org: httpx.Client, sandbox: str) -> None:
    sid = sandbox
    base = f"/v1/sandboxes/{sid}/git"
    ok(org.post(f"{base}/clone", json={"url": ORIGIN, "path": "/tmp/shallow", "depth": 1}))
    assert [c["message"] for c in ok(org.get(f"{base}/log", params={"path": "/tmp/shallow"}))["commits"]] == [
        "three"
    ]
    assert sh(org, sid, "git -C /tmp/shallow rev-parse --is-shallow-repository").strip() == "true"

    ok(org.post(f"{base}/clone", json={"url": ORIGIN, "path": "/tmp/feat", "branch": "feature"}))
    assert ok(org.get(f"{base}/status", params={"path": "/tmp/feat"}))["branch"] == "feature"

    second = sh(org, sid, "git --git-dir=/tmp/origin.git rev-parse main~1").strip()
    ok(org.post(f"{base}/clone", json={"url": ORIGIN, "path": "/tmp/pinned", "commit_id": second}))
    status = ok(org.get(f"{base}/status", params={"path": "/tmp/pinned"}))
    assert status["detached"] is True
    log = ok(org.get(f"{base}/log", params={"path": "/tmp/pinned"}))["commits"]
    assert (log[0]["sha"], log[0]["message"]) == (second, "two")


def test_git_errors_are_4xx_with_git_s_message(org: httpx.Client, sandbox: str) -> None:
    sid = sandbox
    base = f"/v1/sandboxes/{sid}/git"
    ok(org.post(f"{base}/clone", json={"url": ORIGIN, "path": "repo"}))
    cases: list[tuple[httpx.Response, int, str]] = [
        (org.get(f"{base}/status", params={"path": "/tmp"}), 400, "not a git repository"),
        (org.get(f"{base}/status", params={"path": "/nope"}), 404, "no such directory"),
        (org.post(f"{base}/checkout", json={"path": "repo", "ref": "nope"}), 400, "did not match"),
        (org.post(f"{base}/checkout", json={"path": "repo", "ref": "--orphan"}), 400, "invalid ref"),
        (
            org.post(f"{base}/clone", json={"url": "file:///tmp/missing.git", "path": "x"}),
            400,
            "does not appear to be a git repository",
        ),
        (org.post(f"{base}/clone", json={"url": ORIGIN, "path": "repo"}), 400, "already exists"),
        (org.post(f"{base}/add", json={"path": "repo", "files": ["absent"]}), 400, "did not match"),
        (org.post(f"{base}/add", json={"path": "repo", "files": []}), 400, "files"),
        (org.post(f"{base}/commit", json={"path": "repo", "message": "m"}), 400, "tell me who you are"),
        (
            org.post(
                f"{base}/commit",
                json={"path": "repo", "message": "m", "author_name": "A", "author_email": "a@b"},
            ),
            400,
            "nothing",
        ),
        (org.delete(f"{base}/branches/ghost", params={"path": "repo"}), 400, "not found"),
        (org.post(f"{base}/push", json={"path": "repo", "remote": "nowhere"}), 400, "nowhere"),
        (org.post(f"{base}/clone", json={"url": ORIGIN, "path": "y", "bogus": 1}), 400, "bogus"),
        (org.post(f"{base}/clone", json={"url": ORIGIN, "path": "y", "depth": 0}), 400, "depth"),
        (org.get(f"{base}/log", params={"path": "repo", "limit": 0}), 400, "limit"),
        (org.get("/v1/sandboxes/nope/git/status", params={"path": "repo"}), 404, "not found"),
    ]
    for resp, status, needle in cases:
        assert resp.status_code == status, (resp.request.url, resp.text)
        assert needle in resp.json()["message"], (resp.request.url, resp.json())


def test_credentials_are_used_but_never_stored(org: httpx.Client, sandbox: str, stack: Stack) -> None:
    sid = sandbox
    base = f"/v1/sandboxes/{sid}/git"
    user, password = "agent", "pw-" + secrets.token_hex(16)
    digest = hashlib.sha256(f"{user}:{password}".encode()).hexdigest()
    sh(
        org,
        sid,
        f"mkdir -p /tmp/srv && git clone -q --bare /tmp/origin.git /tmp/srv/private.git"
        f" && cat > /tmp/server.py <<'EOF'\n{textwrap.dedent(SERVER)}\nEOF",
    )
    sh(org, sid, f"nohup python3 /tmp/server.py /tmp/srv {digest} 8418 >/tmp/server.log 2>&1 &")
    sh(
        org,
        sid,
        "for i in $(seq 50); do python3 -c \"import socket; socket.create_connection(('127.0.0.1', 8418))\""
        " 2>/dev/null && exit 0; sleep 0.1; done; exit 1",
    )
    url = "http://127.0.0.1:8418/private.git"

    refused = org.post(f"{base}/clone", json={"url": url, "path": "anon"})
    assert refused.status_code == 400 and "could not read Username" in refused.json()["message"], refused.text
    wrong = org.post(
        f"{base}/clone", json={"url": url, "path": "wrong", "username": user, "password": "nope"}
    )
    assert wrong.status_code == 400 and "Authentication failed" in wrong.json()["message"], wrong.text

    creds = {"username": user, "password": password}
    ok(org.post(f"{base}/clone", json={"url": url, "path": "private", **creds}))
    sh(org, sid, "cd ~/private && echo secret-free > pushed.txt")
    ok(org.post(f"{base}/add", json={"path": "private", "files": ["."]}))
    sha = ok(
        org.post(
            f"{base}/commit",
            json={"path": "private", "message": "m", "author_name": "A", "author_email": "a@example.com"},
        )
    )["sha"]
    assert org.post(f"{base}/push", json={"path": "private"}).status_code == 400  # no credentials
    ok(org.post(f"{base}/push", json={"path": "private", **creds}))
    assert sh(org, sid, "git --git-dir=/tmp/srv/private.git rev-parse main").strip() == sha
    ok(org.post(f"{base}/pull", json={"path": "private", **creds}))

    config = sh(org, sid, "cat ~/private/.git/config")
    assert password not in config and f"url = {url}\n" in config
    assert "credential" not in config
    assert sh(org, sid, "git config --global --list 2>/dev/null || true").find(password) == -1
    # nothing on the sandbox's disk (its subvolume in the host's storage pool), in its console
    # log or in any log of the stack has the password (its directory also holds a sysfs mount)
    disk = stack.var / "hostd" / "pool" / "disks" / sid
    console = stack.var / "hostd" / "sandboxes" / sid / "console.log"
    assert (disk / "home" / "daytona" / "private" / "pushed.txt").is_file() and console.is_file()
    found = subprocess.run(
        ["grep", "-rlaF", "-D", "skip", password, str(disk), str(console), str(stack.var / "log")],
        capture_output=True,
        text=True,
    )
    assert found.returncode == 1, (found.stdout, found.stderr[-2000:])  # 1: no match (2: an error)


def test_daytona_git_toolbox(org: httpx.Client, sandbox: str) -> None:
    sid = sandbox
    before = org.get(f"/v1/sandboxes/{sid}").json()["last_activity_at"]
    time.sleep(1.1)
    for prefix in (f"/toolbox/{sid}/git", f"/sandbox/{sid}/toolbox/git"):
        path = "dt" if prefix.startswith("/toolbox") else "dt2"
        resp = org.post(f"{prefix}/clone", json={"url": ORIGIN, "path": path, "branch": None, "depth": None})
        assert resp.status_code == 200 and resp.content in (b"", b"null"), resp.text
        status = ok(org.get(f"{prefix}/status", params={"path": path}))
        assert status == {
            "currentBranch": "main",
            "fileStatus": [],
            "ahead": 0,
            "behind": 0,
            "branchPublished": True,
            "detached": False,
            "upstream": "origin/main",
        }
    after = org.get(f"/v1/sandboxes/{sid}").json()["last_activity_at"]
    assert datetime.fromisoformat(after.replace("Z", "+00:00")) > datetime.fromisoformat(
        before.replace("Z", "+00:00")
    )  # git counts as activity

    base = f"/toolbox/{sid}/git"
    sh(org, sid, "echo x > ~/dt/x.txt")
    status = ok(org.get(f"{base}/status", params={"path": "dt"}))
    assert status["fileStatus"] == [
        {"name": "x.txt", "staging": "Untracked", "worktree": "Untracked", "extra": ""}
    ]
    ok(org.post(f"{base}/add", json={"path": "dt", "files": ["x.txt"]}))
    assert ok(org.get(f"{base}/status", params={"path": "dt"}))["fileStatus"][0]["staging"] == "Added"
    sha = ok(
        org.post(f"{base}/commit", json={"path": "dt", "message": "x", "author": "Bo", "email": "bo@x.org"})
    )["hash"]
    empty = ok(
        org.post(
            f"{base}/commit",
            json={"path": "dt", "message": "e", "author": "Bo", "email": "bo@x.org", "allow_empty": True},
        )
    )["hash"]
    history = ok(org.get(f"{base}/history", params={"path": "dt"}))
    assert [c["message"] for c in history] == ["e", "x", "three", "two", "one"]
    assert history[1] == {
        "hash": sha,
        "author": "Bo",
        "email": "bo@x.org",
        "message": "x",
        "timestamp": history[1]["timestamp"],
    }
    assert history[0]["hash"] == empty

    assert org.post(f"{base}/branches", json={"path": "dt", "name": "side"}).status_code == 200
    assert ok(org.get(f"{base}/branches", params={"path": "dt"})) == {
        "branches": ["main", "side"],
        "current": "main",
    }
    ok(org.post(f"{base}/checkout", json={"path": "dt", "branch": "side"}))
    assert ok(org.get(f"{base}/status", params={"path": "dt"}))["currentBranch"] == "side"
    ok(org.post(f"{base}/push", json={"path": "dt", "set_upstream": True}))
    assert sh(org, sid, "git --git-dir=/tmp/origin.git rev-parse side").strip() == empty
    assert ok(org.get(f"{base}/status", params={"path": "dt"}))["upstream"] == "origin/side"
    ok(org.post(f"{base}/checkout", json={"path": "dt", "branch": "main"}))
    deleted = org.request("DELETE", f"{base}/branches", json={"path": "dt", "name": "side"})
    assert deleted.status_code == 200, deleted.text
    assert ok(org.get(f"{base}/branches", params={"path": "dt"}))["branches"] == ["main"]
    ok(org.post(f"{base}/pull", json={"path": "dt"}))

    bad = org.post(f"{base}/checkout", json={"path": "dt", "branch": "nope"})
    assert bad.status_code == 400 and "nope" in bad.json()["message"]
    assert org.get(f"{base}/status", params={"path": "/tmp"}).status_code == 400
