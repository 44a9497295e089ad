"""Files inside a sandbox, end to end (gateway → core → hostd's relay → agent), in both API
shapes, with every result checked against the sandbox itself (through ``exec``).

Confinement. The agent resolves paths in the sandbox's own mount namespace, so ``..`` past
the root, absolute symlinks, a symlinked parent and ``/proc/self/root`` all land inside the
sandbox. ``test_paths_cannot_leave_the_sandbox`` proves it with a marker file written on the
HOST: no spelling of its path reaches it.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import httpx
import pytest

HOST_MARKER = Path("/root/dnah-files-marker")


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


def ok(resp: httpx.Response, status: int = 200) -> object:
    assert resp.status_code == status, resp.text
    return resp.json() if resp.content else None


@pytest.fixture
def sandbox(org: httpx.Client) -> str:
    sid = create(org)
    sh(
        org,
        sid,
        "set -e; cd ~; mkdir -p proj/pkg; printf 'import os\\nTODO: one\\n' > proj/a.py;"
        " printf 'x = 1\\n# TODO: two\\n' > proj/pkg/b.py; printf 'TODO\\0bin' > proj/pkg/blob.bin;"
        " printf hello > notes.txt; chmod 640 notes.txt",
    )
    return sid


@pytest.fixture
def marker() -> Iterator[str]:
    secret = secrets.token_hex(16)
    HOST_MARKER.write_text(secret)
    HOST_MARKER.chmod(0o644)
    try:
        yield secret
    finally:
        HOST_MARKER.unlink(missing_ok=True)


def test_native_files(org: httpx.Client, sandbox: str) -> None:
    sid = sandbox
    base = f"/v1/sandboxes/{sid}/files"
    home = sh(org, sid, "echo $HOME").strip()

    listed = ok(org.get(f"{base}/list", params={"path": "."}))
    assert isinstance(listed, dict)
    by_name = {e["name"]: e for e in listed["items"]}
    assert {"notes.txt", "proj"} <= set(by_name)
    notes = by_name["notes.txt"]
    assert notes["path"] == f"{home}/notes.txt"
    assert (notes["size"], notes["mode"], notes["permissions"], notes["is_dir"]) == (
        5,
        "-rw-r-----",
        "0640",
        False,
    )
    user = sh(org, sid, "id -un").strip()
    assert notes["owner"] == user and notes["group"] == sh(org, sid, "id -gn").strip()
    epoch = int(sh(org, sid, "stat -c %Y ~/notes.txt"))
    assert int(datetime.fromisoformat(notes["mod_time"]).timestamp()) == epoch
    deep = ok(org.get(f"{base}/list", params={"path": "proj", "depth": 2}))
    assert isinstance(deep, dict)
    assert [e["path"].removeprefix(home) for e in deep["items"]] == [
        "/proj/a.py",
        "/proj/pkg",
        "/proj/pkg/b.py",
        "/proj/pkg/blob.bin",
    ]

    info = ok(org.get(f"{base}/stat", params={"path": "proj"}))
    assert isinstance(info, dict) and info["is_dir"] and info["mode"].startswith("drwx")

    assert ok(org.post(f"{base}/mkdir", params={"path": "made/deep", "mode": "700"})) == {"ok": True}
    assert sh(org, sid, "stat -c %a ~/made/deep").strip() == "700"

    assert ok(org.post(f"{base}/move", json={"source": "notes.txt", "destination": "made/n.txt"})) == {
        "ok": True
    }
    assert sh(org, sid, "cat ~/made/n.txt") == "hello"
    assert ok(org.post(f"{base}/chmod", json={"path": "made/n.txt", "mode": "604"})) == {"ok": True}
    assert sh(org, sid, "stat -c %a ~/made/n.txt").strip() == "604"

    found = ok(org.get(f"{base}/find", params={"path": "proj", "pattern": "*.py"}))
    assert found == {"paths": [f"{home}/proj/a.py", f"{home}/proj/pkg/b.py"], "truncated": False}
    grep = ok(org.get(f"{base}/grep", params={"path": "proj", "pattern": "TODO", "max": 1}))
    assert grep == {
        "matches": [{"file": f"{home}/proj/a.py", "line": 2, "content": "TODO: one"}],
        "truncated": True,
    }

    replaced = ok(
        org.post(f"{base}/replace", json={"path": "proj", "glob": "*.py", "find": "TODO", "replace": "DONE"})
    )
    assert isinstance(replaced, dict)
    assert [(r["file"], r["replacements"]) for r in replaced["results"]] == [
        (f"{home}/proj/a.py", 1),
        (f"{home}/proj/pkg/b.py", 1),
    ]
    assert sh(org, sid, "cat ~/proj/pkg/b.py") == "x = 1\n# DONE: two\n"

    assert org.delete(base, params={"path": "made"}).status_code == 400  # a directory needs recurse
    assert ok(org.delete(base, params={"path": "made", "recurse": "true"})) == {"ok": True}
    assert sh(org, sid, "test -e ~/made || echo gone") == "gone\n"

    assert org.get(f"{base}/stat", params={"path": "nope"}).status_code == 404
    assert org.get(f"{base}/list", params={"path": "proj/a.py"}).status_code == 400
    denied = org.get(f"{base}/list", params={"path": "/root"})
    assert denied.status_code == 403, denied.text
    mine = {"path": "proj/a.py", "owner": user, "group": notes["group"]}
    assert ok(org.post(f"{base}/chmod", json=mine)) == {"ok": True}  # what the kernel allows
    chown = org.post(f"{base}/chmod", json={"path": "proj/a.py", "owner": "root"})
    assert chown.status_code == 403 and "Operation not permitted" in chown.json()["message"], chown.text


def test_daytona_files(org: httpx.Client, sandbox: str) -> None:
    sid = sandbox
    home = sh(org, sid, "echo $HOME").strip()
    before = org.get(f"/v1/sandboxes/{sid}").json()["last_activity_at"]
    time.sleep(1.1)
    for base in (f"/toolbox/{sid}/files", f"/sandbox/{sid}/toolbox/files"):
        listed = ok(org.get(base, params={"path": home}))
        assert isinstance(listed, list)
        notes = next(e for e in listed if e["name"] == "notes.txt")
        assert set(notes) == {
            "name",
            "path",
            "isDir",
            "size",
            "mode",
            "permissions",
            "owner",
            "group",
            "modTime",
            "modifiedAt",
        }
        assert (notes["isDir"], notes["size"], notes["mode"], notes["permissions"]) == (
            False,
            5,
            "-rw-r-----",
            "0640",
        )
        assert notes["modTime"].endswith(" +0000 UTC") and notes["modifiedAt"].endswith("Z")
    after = org.get(f"/v1/sandboxes/{sid}").json()["last_activity_at"]
    assert datetime.fromisoformat(after.replace("Z", "+00:00")) > datetime.fromisoformat(
        before.replace("Z", "+00:00")
    )  # files count as activity

    base = f"/toolbox/{sid}/files"
    info = ok(org.get(f"{base}/info", params={"path": "proj"}))
    assert isinstance(info, dict) and info["isDir"] is True and info["path"] == f"{home}/proj"
    resp = org.post(f"{base}/folder", params={"path": "dt/x", "mode": "750"})
    assert resp.status_code == 201, resp.text
    assert sh(org, sid, "stat -c %a ~/dt/x").strip() == "750"
    resp = org.post(f"{base}/move", params={"source": "notes.txt", "destination": "dt/notes"})
    assert resp.status_code == 200, resp.text
    resp = org.post(f"{base}/permissions", params={"path": "dt/notes", "mode": "600"})
    assert resp.status_code == 200, resp.text
    assert sh(org, sid, "stat -c %a ~/dt/notes").strip() == "600"
    # the swap: Daytona's search is names, its find contents
    assert ok(org.get(f"{base}/search", params={"path": "proj", "pattern": "b.*"})) == {
        "files": [f"{home}/proj/pkg/b.py"]
    }
    assert ok(org.get(f"{base}/find", params={"path": "proj", "pattern": "TODO:"})) == [
        {"file": f"{home}/proj/a.py", "line": 2, "content": "TODO: one"},
        {"file": f"{home}/proj/pkg/b.py", "line": 2, "content": "# TODO: two"},
    ]
    replaced = ok(
        org.post(
            f"{base}/replace",
            json={"files": [f"{home}/proj/a.py", "proj/missing.py"], "pattern": "one", "newValue": "1"},
        )
    )
    assert replaced == [
        {"file": f"{home}/proj/a.py", "success": True, "error": None},
        {
            "file": f"{home}/proj/missing.py",
            "success": False,
            "error": f"{home}/proj/missing.py: No such file or directory",
        },
    ]
    assert sh(org, sid, "cat ~/proj/a.py") == "import os\nTODO: 1\n"
    assert org.delete(base, params={"path": "dt", "recursive": "false"}).status_code == 400
    resp = org.delete(base, params={"path": "dt", "recursive": "true"})
    assert resp.status_code == 204, resp.text
    assert org.get(f"{base}/info", params={"path": "dt"}).status_code == 404


def test_paths_cannot_leave_the_sandbox(org: httpx.Client, sandbox: str, marker: str) -> None:
    sid = sandbox
    base = f"/v1/sandboxes/{sid}/files"
    sh(org, sid, "ln -s /etc/shadow ~/shadow; ln -s /root ~/rootdir; ln -s / ~/slash")
    # '..' past the root stays at the sandbox's root: /etc/hostname as the sandbox sees it
    inside = sh(org, sid, "stat -c '%i %s %Y' /etc/hostname").split()
    info = ok(org.get(f"{base}/stat", params={"path": "/../../etc/hostname"}))
    assert isinstance(info, dict) and info["path"] == "/etc/hostname"
    assert info["size"] == int(inside[1])
    assert int(datetime.fromisoformat(info["mod_time"]).timestamp()) == int(inside[2])
    spellings = [
        str(HOST_MARKER),
        f"/../../..{HOST_MARKER}",
        f"/proc/self/root{HOST_MARKER}",
        f"/proc/1/root{HOST_MARKER}",
        f"rootdir/{HOST_MARKER.name}",
        f"slash{HOST_MARKER}",
        f"../../..{HOST_MARKER}",
    ]
    for path in spellings:
        for route in ("stat", "list"):
            resp = org.get(f"{base}/{route}", params={"path": path})
            assert resp.status_code in (403, 404), (path, route, resp.text)
            assert marker not in resp.text
        resp = org.get(f"{base}/grep", params={"path": path, "pattern": marker})
        assert resp.status_code in (403, 404), (path, resp.text)
        resp = org.post(f"{base}/replace", json={"files": [path], "find": marker, "replace": "x"})
        assert resp.status_code == 200 and not resp.json()["results"][0]["success"], resp.text
    # a symlink to /etc/shadow names the sandbox's shadow file, which its user may not read
    resp = org.get(f"{base}/grep", params={"path": "shadow", "pattern": "root"})
    assert resp.status_code == 403, resp.text
    # nothing under the sandbox's root mentions the marker
    walk = ok(org.get(f"{base}/find", params={"path": "/", "pattern": HOST_MARKER.name, "max": 10}))
    assert isinstance(walk, dict) and walk["paths"] == []
    assert HOST_MARKER.read_text() == marker  # and the host's file is untouched
    resp = org.delete(base, params={"path": f"/proc/self/root{HOST_MARKER}"})
    assert resp.status_code in (403, 404)
    assert HOST_MARKER.exists()


def test_files_need_the_callers_sandbox(org: httpx.Client, stack: object, gateway: httpx.Client) -> None:
    from tests.support import mint_key

    sid = create(org)
    key = mint_key(gateway, "files-other")
    with httpx.Client(
        base_url=str(org.base_url), headers={"authorization": f"Bearer {key}"}, timeout=60
    ) as other:
        assert other.get(f"/v1/sandboxes/{sid}/files/list", params={"path": "/"}).status_code == 404
        assert other.get(f"/toolbox/{sid}/files", params={"path": "/"}).status_code == 404
