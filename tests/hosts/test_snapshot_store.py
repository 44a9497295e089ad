"""The snapshot and archive stores on a real directory: entries appear whole or not at all,
leftovers of a crash are swept, and a snapshot is trusted only when every check passes."""

from __future__ import annotations

import ast
import hashlib
import os
from pathlib import Path

import msgspec
import pytest
from nacl.signing import VerifyKey

from contracts.snapshots import SignedSnapshot, SnapshotClaim, new_signing_key, parse_signing_key, sign
from hosts import snapshot_store
from hosts.errors import SandboxConflict, SnapshotInvalid, SnapshotNotFound
from hosts.runtime import _snapshot
from hosts.runtime._layout import DiskBase
from hosts.snapshot_store import EntryStore

BASE = DiskBase(template="dnah-base", content_hash="abc123")


@pytest.fixture
def store(tmp_path: Path) -> EntryStore:
    return EntryStore(tmp_path / "snapshots", "snapshot")


def build(store: EntryStore, tmp_path: Path, entry_id: str, sandbox_id: str = "sb1") -> Path:
    """A real snapshot of a small disk, published as ``entry_id``."""
    upper = tmp_path / f"upper-{entry_id}"
    (upper / "home").mkdir(parents=True, exist_ok=True)
    (upper / "home" / "f").write_text("data\n")
    staging = store.staging(entry_id)
    _snapshot.write(upper, staging, sandbox_id, BASE, "fake")
    return store.publish(entry_id, staging, replace=False)


def signed_for(directory: Path, snapshot_id: str, kid: str = "k1") -> tuple[bytes, dict[str, VerifyKey]]:
    """The encoded signature of the stored snapshot, and the verify keys that accept it."""
    taken = snapshot_store.describe(snapshot_id, directory)
    claim = SnapshotClaim(
        sandbox_id=taken.sandbox_id,
        snapshot_id=snapshot_id,
        manifest_hash=taken.manifest_hash,
        size=taken.size,
        ts=1,
    )
    kid, key = parse_signing_key(new_signing_key(kid))
    return msgspec.json.encode(sign(claim, kid, key)), {kid: key.verify_key}


def test_an_entry_appears_only_when_published(store: EntryStore, tmp_path: Path) -> None:
    staging = store.staging("s1")
    assert staging.name == ".tmp-s1" and not store.path("s1").exists()
    with pytest.raises(SnapshotNotFound):
        store.existing("s1")
    store.discard(staging)
    directory = build(store, tmp_path, "s1")
    assert store.existing("s1") == directory
    assert sorted(p.name for p in directory.iterdir()) == ["manifest.json", "rootfs.tar.zst"]
    with pytest.raises(SandboxConflict):
        build(store, tmp_path, "s1")
    again = store.staging("s1")
    _snapshot.write(tmp_path / "upper-s1", again, "sb1", BASE, "fake")
    assert store.publish("s1", again, replace=True) == directory  # archives replace


def test_delete_is_idempotent_and_sweep_removes_leftovers(store: EntryStore, tmp_path: Path) -> None:
    build(store, tmp_path, "s1")
    store.delete("s1")
    store.delete("s1")
    assert not store.path("s1").exists()
    store.staging("half-written")
    (store.root / ".tmp-del-s2").mkdir()
    build(store, tmp_path, "kept")
    assert sorted(store.sweep()) == [".tmp-del-s2", ".tmp-half-written"]
    assert [p.name for p in store.root.iterdir()] == ["kept"]


@pytest.mark.parametrize("bad", ["", "..", "../x", "a/b", "-lead", "x" * 64, ".tmp-x"])
def test_ids_that_could_name_another_path_name_nothing(store: EntryStore, bad: str) -> None:
    with pytest.raises(SnapshotNotFound):
        store.path(bad)


def test_describe_matches_the_stored_bytes(store: EntryStore, tmp_path: Path) -> None:
    directory = build(store, tmp_path, "s1")
    taken = snapshot_store.describe("s1", directory)
    assert taken.manifest_hash == hashlib.sha256((directory / "manifest.json").read_bytes()).hexdigest()
    assert taken.size == (directory / "rootfs.tar.zst").stat().st_size
    assert (taken.sandbox_id, taken.memory) == ("sb1", False)


def test_seal_stores_only_a_claim_describing_the_snapshot(store: EntryStore, tmp_path: Path) -> None:
    directory = build(store, tmp_path, "s1")
    build(store, tmp_path, "s2")
    signature, keys = signed_for(directory, "s1")
    other, _ = signed_for(store.existing("s2"), "s2")
    with pytest.raises(SnapshotInvalid, match="does not describe"):
        snapshot_store.seal("s1", directory, msgspec.json.decode(other, type=SignedSnapshot))
    assert not (directory / "signature.json").exists()
    snapshot_store.seal("s1", directory, msgspec.json.decode(signature, type=SignedSnapshot))
    assert (directory / "signature.json").read_bytes() == signature
    manifest = snapshot_store.trusted_snapshot("s1", directory, keys, "sb1")
    assert manifest.sandbox_id == "sb1"


def test_trust_checks_each_link_in_order(store: EntryStore, tmp_path: Path) -> None:
    directory = build(store, tmp_path, "s1")
    signature, keys = signed_for(directory, "s1")

    def check(sandbox_id: str | None = "sb1") -> None:
        snapshot_store.trusted_snapshot("s1", directory, keys, sandbox_id)

    with pytest.raises(SnapshotInvalid, match="not signed"):
        check()
    (directory / "signature.json").write_bytes(signature)
    check()
    check(None)
    with pytest.raises(SnapshotInvalid, match="is of sandbox sb1, not sb2"):
        check("sb2")
    # The same signature moved to another snapshot's directory names the wrong snapshot.
    other = build(store, tmp_path, "s2")
    (other / "signature.json").write_bytes(signature)
    with pytest.raises(SnapshotInvalid, match="carries the signature of s1"):
        snapshot_store.trusted_snapshot("s2", other, keys, "sb1")
    # A file that no longer matches the manifest, then a manifest that no longer matches.
    archive = directory / "rootfs.tar.zst"
    original = archive.read_bytes()
    archive.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    with pytest.raises(SnapshotInvalid, match="does not match its manifest"):
        check()
    archive.write_bytes(original)
    manifest = directory / "manifest.json"
    manifest.write_bytes(manifest.read_bytes().replace(b"sb1", b"sb9"))
    with pytest.raises(SnapshotInvalid, match="manifest does not match its signature"):
        check()
    os.unlink(manifest)
    with pytest.raises(SnapshotInvalid, match="has no manifest"):
        check()


def test_the_store_imports_no_backend() -> None:
    """Snapshots of every runtime pass through the store: it knows the neutral format only."""
    tree = ast.parse(Path(snapshot_store.__file__).read_text())
    runtime_modules = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("hosts.runtime"):
            runtime_modules |= {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            runtime_modules |= {a.name for a in node.names if a.name.startswith("hosts.runtime")}
    assert runtime_modules == {"hosts.runtime.manifest", "hosts.runtime._mounts.remove_tree"}
