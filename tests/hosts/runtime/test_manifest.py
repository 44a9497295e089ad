"""The backend-neutral snapshot manifest: manifests already on disk still read, and a runtime
reads only the kinds it can use. The ``vm`` kind (a read-only subvolume, checked by identity;
a memory state refused by any VMM but the one and version that wrote it) is tested on a real
pool in ``tests/hosts/vm/test_snapshot.py``."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from hosts.errors import SnapshotInvalid
from hosts.runtime import manifest

TAR = b"tar!\n"
OLD_MANIFEST = b"""{
  "sandbox_id": "sb1",
  "template": "dnah-base",
  "content_hash": "abc123",
  "kind": "archive",
  "layer": "disk",
  "files": [
    {
      "name": "rootfs.tar.zst",
      "sha256": "%s",
      "size": 5
    }
  ],
  "disk": null,
  "memory": false
}
""" % hashlib.sha256(TAR).hexdigest().encode()
"""A manifest byte for byte as hostd wrote it before the format was shared (no ``runtime``,
``vmm_version`` nor ``vm``): the core signed these bytes, so they are read as they are."""


def test_a_manifest_written_before_the_neutral_format_still_reads(tmp_path: Path) -> None:
    (tmp_path / "rootfs.tar.zst").write_bytes(TAR)
    (tmp_path / "manifest.json").write_bytes(OLD_MANIFEST)

    old = manifest.read(tmp_path)

    assert (old.kind, old.runtime, old.vmm_version, old.vm) == ("archive", None, None, None)
    assert old.memory is False
    assert old.size == len(TAR)
    assert (tmp_path / "manifest.json").read_bytes() == OLD_MANIFEST  # never rewritten
    # A runtime that uses only VM snapshots refuses it by kind, before anything else.
    with pytest.raises(SnapshotInvalid, match="holds a archive snapshot, which this runtime cannot use"):
        manifest.read(tmp_path, ["vm"])


def test_the_namespace_runtimes_manifest_is_still_refused() -> None:
    with pytest.raises(SnapshotInvalid, match="namespace runtime"):
        manifest.decode(b'{"sandbox_id": "sb1", "template": "t", "content_hash": "h", "files": []}')
