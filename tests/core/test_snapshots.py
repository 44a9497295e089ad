"""Snapshots end to end through the gateway: snapshot, restore, clone, fork, lineage, and the
signature checks — a snapshot whose data, manifest or signature was changed by one byte, or
signed by a key the core does not list, is refused with a clear error and the sandbox is
left as it was. Data is checked inside the sandboxes (through ``exec``)."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import asyncpg
import httpx
import msgspec
import pytest

from cli.stack import Stack
from contracts.snapshots import decode_signed, new_signing_key, parse_signing_key, sign
from tests.conftest import ROTATED_SIGNING_KEY
from tests.core.test_files import create, sh


def snapshot(org: httpx.Client, sid: str) -> dict:
    resp = org.post(f"/v1/sandboxes/{sid}/snapshot")
    assert resp.status_code == 201, resp.text
    return dict(resp.json())


def store_dir(stack: Stack, snapshot_id: str) -> Path:
    """The host's snapshot store is in its storage pool: a snapshot is a btrfs snapshot."""
    directory = stack.var / "hostd" / "pool" / "snapshots" / snapshot_id
    assert directory.is_dir(), directory
    return directory


def flip_data_byte(directory: Path, name: str) -> None:
    """Flip a byte of file ``name`` (in the sandbox's home) in the snapshot's read-only disk,
    which takes turning its read-only flag off and on again."""
    disk = directory / "disk"
    subprocess.run(["btrfs", "property", "set", "-ts", str(disk), "ro", "false"], check=True)
    flip_byte(disk / "home" / "daytona" / name, offset=0)
    subprocess.run(["btrfs", "property", "set", "-ts", str(disk), "ro", "true"], check=True)


def flip_byte(path: Path, offset: int = -1) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_snapshot_restore_clone_fork(org: httpx.Client) -> None:
    sid = create(org)
    sh(org, sid, "echo before > ~/a.txt")
    snap = snapshot(org, sid)
    assert snap["sandbox_id"] == sid and snap["memory"] is False and snap["size_bytes"] > 0
    assert snap["kid"] and len(snap["manifest_hash"]) == 64
    assert [s["id"] for s in org.get(f"/v1/sandboxes/{sid}/snapshots").json()["items"]] == [snap["id"]]
    sh(org, sid, "echo after > ~/b.txt; echo changed > ~/a.txt")

    # restore: back to the snapshot — what came after is gone
    restored = org.post(f"/v1/sandboxes/{sid}/restore", json={"snapshot_id": snap["id"]})
    assert restored.status_code == 200, restored.text
    assert restored.json()["state"] == "started"
    assert sh(org, sid, "cat ~/a.txt; test -e ~/b.txt && echo b || echo no-b") == "before\nno-b\n"

    # clone: a new sandbox with the snapshot's files; the source is untouched by it
    clone = org.post(
        f"/v1/sandboxes/{sid}/clone", json={"snapshot_id": snap["id"], "name": f"clone-{sid[:8]}"}
    )
    assert clone.status_code == 201, clone.text
    cid = clone.json()["id"]
    assert clone.json()["parent_id"] == sid and clone.json()["source_snapshot_id"] == snap["id"]
    assert clone.json()["from_memory"] is False  # a container's snapshot holds no memory
    assert sh(org, cid, "cat ~/a.txt") == "before\n"
    sh(org, cid, "echo clone-only > ~/c.txt")
    assert sh(org, sid, "test -e ~/c.txt && echo yes || echo no") == "no\n"

    # fork: snapshot + clone of the sandbox as it is now
    sh(org, sid, "echo now > ~/d.txt")
    fork = org.post(f"/v1/sandboxes/{sid}/fork", json={})
    assert fork.status_code == 201, fork.text
    fid = fork.json()["id"]
    assert fork.json()["parent_id"] == sid and fork.json()["from_memory"] is False
    assert sh(org, fid, "cat ~/a.txt ~/d.txt") == "before\nnow\n"

    # a parent with live forks cannot be deleted
    refused = org.delete(f"/v1/sandboxes/{sid}")
    assert refused.status_code == 409 and "fork" in refused.json()["message"]
    for child in (cid, fid):
        assert org.delete(f"/v1/sandboxes/{child}").status_code == 200
    assert org.delete(f"/v1/sandboxes/{sid}").status_code == 200


def test_daytona_fork(org: httpx.Client) -> None:
    sid = create(org)
    sh(org, sid, "echo daytona > ~/f.txt")
    resp = org.post(f"/sandbox/{sid}/fork", json={"name": f"dfork-{sid[:8]}"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["state"] == "started" and resp.json()["name"] == f"dfork-{sid[:8]}"
    assert resp.json()["fromMemory"] is False
    assert sh(org, resp.json()["id"], "cat ~/f.txt") == "daytona\n"
    org.delete(f"/v1/sandboxes/{resp.json()['id']}")


def test_a_clone_says_whether_it_continues_the_parents_processes(org: httpx.Client, stack: Stack) -> None:
    """``from_memory`` is the snapshot's ``memory``, recorded at clone time. The stack's
    containers take no memory snapshots, so the row is made to say it held memory (as a VM
    host's does): the core reports what the snapshot holds, the host's clone is the same."""
    sid = create(org)
    snap = snapshot(org, sid)
    assert org.get(f"/v1/sandboxes/{sid}").json()["from_memory"] is False  # no clone
    _sql(stack, "UPDATE snapshots SET memory = true WHERE id = $1", snap["id"])
    clone = org.post(f"/v1/sandboxes/{sid}/clone", json={"snapshot_id": snap["id"]})
    assert clone.status_code == 201, clone.text
    cid = clone.json()["id"]
    assert clone.json()["from_memory"] is True
    assert org.get(f"/v1/sandboxes/{cid}").json()["from_memory"] is True  # kept
    daytona = org.get(f"/sandbox/{cid}")
    assert daytona.status_code == 200 and daytona.json()["fromMemory"] is True, daytona.text
    fork = org.post(f"/v1/sandboxes/{sid}/fork", json={})  # a fresh snapshot: no memory
    assert fork.status_code == 201 and fork.json()["from_memory"] is False, fork.text
    for child in (cid, fork.json()["id"], sid):
        assert org.delete(f"/v1/sandboxes/{child}").status_code == 200


def _sql(stack: Stack, query: str, *args: object) -> None:
    async def go() -> None:
        conn = await asyncpg.connect(stack.database_url)
        try:
            await conn.execute(query, *args)
        finally:
            await conn.close()

    asyncio.run(go())


def resign(directory: Path, signing_key: str) -> None:
    """Replace the snapshot's signature by one over the same claim with ``signing_key``."""
    signed = decode_signed((directory / "signature.json").read_bytes())
    kid, key = parse_signing_key(signing_key)
    (directory / "signature.json").write_bytes(msgspec.json.encode(sign(signed.claim, kid, key)))


def test_a_snapshot_signed_by_a_rotated_key_still_verifies(org: httpx.Client, stack: Stack) -> None:
    """The core signs with its current key and still accepts the keys it lists as verify-only
    (``DNAH_SNAPSHOT_VERIFY_KEYS``): snapshots signed before a rotation keep working."""
    sid = create(org)
    sh(org, sid, "echo old > ~/r.txt")
    snap = snapshot(org, sid)
    resign(store_dir(stack, snap["id"]), ROTATED_SIGNING_KEY)
    sh(org, sid, "echo new > ~/r.txt")
    resp = org.post(f"/v1/sandboxes/{sid}/restore", json={"snapshot_id": snap["id"]})
    assert resp.status_code == 200, resp.text
    assert sh(org, sid, "cat ~/r.txt") == "old\n"


@pytest.mark.parametrize("target", ["data", "manifest", "signature", "unsigned", "unknown-key"])
def test_tampered_snapshots_are_refused_and_change_nothing(
    org: httpx.Client, stack: Stack, target: str
) -> None:
    sid = create(org)
    sh(org, sid, "echo v1 > ~/v.txt")
    snap = snapshot(org, sid)
    sh(org, sid, "echo v2 > ~/v.txt")
    directory = store_dir(stack, snap["id"])
    if target == "data":
        flip_data_byte(directory, "v.txt")
    elif target == "manifest":
        flip_byte(directory / "manifest.json", offset=10)
    elif target == "signature":
        text = (directory / "signature.json").read_text()
        i = text.index('"signature":"') + len('"signature":"')
        swapped = "B" if text[i] != "B" else "C"
        (directory / "signature.json").write_text(text[:i] + swapped + text[i + 1 :])
    elif target == "unknown-key":  # a valid signature, by a key the core does not list
        resign(directory, new_signing_key("rogue-1"))
    else:
        (directory / "signature.json").unlink()
    resp = org.post(f"/v1/sandboxes/{sid}/restore", json={"snapshot_id": snap["id"]})
    assert resp.status_code == 422, resp.text
    assert resp.json()["code"] == "snapshot_rejected" and resp.json()["message"]
    assert org.get(f"/v1/sandboxes/{sid}").json()["state"] == "started"
    assert sh(org, sid, "cat ~/v.txt") == "v2\n"  # untouched
    clone = org.post(f"/v1/sandboxes/{sid}/clone", json={"snapshot_id": snap["id"]})
    assert clone.status_code == 422, clone.text
    assert not [
        s for s in org.get("/v1/sandboxes").json()["items"] if s.get("source_snapshot_id") == snap["id"]
    ]


def test_snapshot_errors(org: httpx.Client) -> None:
    sid = create(org)
    other = create(org)
    snap = snapshot(org, other)
    assert org.post(f"/v1/sandboxes/{sid}/restore", json={"snapshot_id": snap["id"]}).status_code == 400
    assert org.post(f"/v1/sandboxes/{sid}/restore", json={"snapshot_id": "snap-nope"}).status_code == 404
    assert org.delete(f"/v1/snapshots/{snap['id']}").status_code == 204
    assert org.get(f"/v1/snapshots/{snap['id']}").status_code == 404
    assert org.post(f"/v1/sandboxes/{other}/clone", json={"snapshot_id": snap["id"]}).status_code == 404
