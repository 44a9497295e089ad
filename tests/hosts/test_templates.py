"""The template store: content-hash keys, atomic builds, and the shared real template."""

from __future__ import annotations

import datetime
import os
import threading
from pathlib import Path

import msgspec
import pytest

from hosts.config import BUILD_SCRIPT
from hosts.errors import RuntimeFailure, TemplateNotFound
from hosts.templates import DEFAULT_TEMPLATE, TemplateRecord, TemplateStore, describe_tree

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="building templates needs root")

# A stand-in for build-template.sh: the same contract (fill the directory given as $1, report
# progress on stdout), in milliseconds instead of a debootstrap.
FAKE_BUILD = """#!/bin/sh
set -eu
echo "building $DNAH_DEBIAN_SUITE into $1"
mkdir -p "$1/etc" "$1/bin"
echo hello > "$1/etc/motd"
ln -s ../etc/motd "$1/bin/motd-link"
echo "$$" >> "$(dirname "$0")/builds"
echo done
"""


@pytest.fixture
def fake_script(tmp_path: Path) -> Path:
    script = tmp_path / "scripts" / "build.sh"
    script.parent.mkdir()
    script.write_text(FAKE_BUILD)
    return script


def builds(script: Path) -> int:
    counter = script.parent / "builds"
    return len(counter.read_text().split()) if counter.exists() else 0


def test_ensure_builds_once_and_describes_the_result(tmp_path: Path, fake_script: Path) -> None:
    store = TemplateStore(tmp_path / "cache", fake_script, suite="trixie")
    lines: list[str] = []
    template = store.ensure("tiny", progress=lines.append)

    key = store.recipe_hash()
    assert template.name == "tiny" and template.content_hash == key and len(key) == 16
    assert template.rootfs == tmp_path / "cache" / f"tiny-{key}" / "rootfs"
    assert (template.rootfs / "etc" / "motd").read_text() == "hello\n"
    assert lines[0] == f"building trixie into {tmp_path}/cache/tiny-{key}.tmp-{os.getpid()}/rootfs"
    assert "done" in lines

    record = store.record(template)
    assert record.name == "tiny" and record.hash == key
    assert record.size_bytes == len("hello\n")
    assert record.tree_hash == describe_tree(template.rootfs)[1]
    built = datetime.datetime.fromisoformat(record.built_at)
    assert abs(datetime.datetime.now(datetime.UTC) - built) < datetime.timedelta(minutes=1)
    on_disk = msgspec.json.decode(
        (template.rootfs.parent / "template.json").read_bytes(), type=TemplateRecord
    )
    assert on_disk == record

    assert store.ensure("tiny") == template
    assert store.get("tiny") == template
    assert builds(fake_script) == 1
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [f"tiny-{key}", f"tiny-{key}.lock"]


def test_the_key_is_the_recipe(tmp_path: Path, fake_script: Path) -> None:
    base = TemplateStore(tmp_path, fake_script).recipe_hash()
    assert TemplateStore(tmp_path, fake_script, mirror="http://mirror.invalid/debian").recipe_hash() == base
    assert TemplateStore(tmp_path, fake_script, suite="trixie").recipe_hash() != base
    copy = tmp_path / "copy.sh"
    copy.write_bytes(fake_script.read_bytes())
    assert TemplateStore(tmp_path, copy).recipe_hash() == base
    copy.write_text(FAKE_BUILD + "echo one more package\n")
    assert TemplateStore(tmp_path, copy).recipe_hash() != base


LAYER = """#!/bin/sh
set -eu
test -f "$1/etc/motd"  # the base is there to build on
echo layered > "$1/etc/layer"
echo layer done
"""


def test_a_layered_template_builds_on_a_copy_of_the_base(tmp_path: Path, fake_script: Path) -> None:
    recipes = fake_script.parent / "templates"
    recipes.mkdir()
    layer = recipes / "extra.sh"
    layer.write_text(LAYER)
    (recipes / "Not A Name.sh").write_text(LAYER)
    store = TemplateStore(tmp_path / "cache", fake_script)
    assert store.names() == [DEFAULT_TEMPLATE, "extra"]

    lines: list[str] = []
    template = store.ensure("extra", progress=lines.append)
    base = store.get(DEFAULT_TEMPLATE)  # built first, as the layer's base
    assert f"copying {DEFAULT_TEMPLATE}-{base.content_hash} as the base" in lines
    assert lines[-2:] == ["layer done", "hashing the tree"]
    assert (template.rootfs / "etc" / "layer").read_text() == "layered\n"
    assert (template.rootfs / "bin" / "motd-link").is_symlink()
    assert not (base.rootfs / "etc" / "layer").exists()  # the base itself is untouched
    assert store.ensure("extra") == template and builds(fake_script) == 1

    key = store.recipe_hash("extra")
    assert key not in (base.content_hash, store.recipe_hash("tiny"))  # a name without a layer: the base's
    layer.write_text(LAYER + "echo one more step\n")
    assert store.recipe_hash("extra") != key and store.recipe_hash() == base.content_hash
    with pytest.raises(TemplateNotFound):
        store.get("extra")  # the edited layer is a template not built yet
    layered_key = store.recipe_hash("extra")
    fake_script.write_text(FAKE_BUILD + "echo base changed\n")
    assert store.recipe_hash("extra") != layered_key  # a new base makes a new layered template


def test_get_raises_for_what_is_not_built(tmp_path: Path, fake_script: Path) -> None:
    store = TemplateStore(tmp_path, fake_script)
    with pytest.raises(TemplateNotFound):
        store.get("tiny")
    store.ensure("tiny")
    with pytest.raises(TemplateNotFound):
        store.get("tiny", content_hash="0" * 16)
    with pytest.raises(TemplateNotFound):
        store.get("../escape")


def test_a_failed_build_leaves_nothing(tmp_path: Path, fake_script: Path) -> None:
    fake_script.write_text(FAKE_BUILD.replace("echo done", "echo broken >&2; exit 3"))
    store = TemplateStore(tmp_path / "cache", fake_script)
    with pytest.raises(RuntimeFailure, match=r"exit 3.*broken"):
        store.ensure("tiny")
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [f"tiny-{store.recipe_hash()}.lock"]
    with pytest.raises(TemplateNotFound):
        store.get("tiny")


def test_an_interrupted_build_is_removed_by_the_next(tmp_path: Path, fake_script: Path) -> None:
    store = TemplateStore(tmp_path / "cache", fake_script)
    stale = tmp_path / "cache" / f"tiny-{store.recipe_hash()}.tmp-999999999"
    (stale / "rootfs" / "etc").mkdir(parents=True)
    store.ensure("tiny")
    assert not stale.exists()


def test_concurrent_ensures_build_once(tmp_path: Path, fake_script: Path) -> None:
    store = TemplateStore(tmp_path / "cache", fake_script)
    results = []
    threads = [threading.Thread(target=lambda: results.append(store.ensure("tiny"))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 4 and len(set(results)) == 1
    assert builds(fake_script) == 1


def test_the_tree_hash_sees_content_modes_and_links(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "d").mkdir(parents=True)
    (tree / "d" / "f").write_text("x")
    (tree / "l").symlink_to("d/f")
    size, first = describe_tree(tree)
    assert size == 1
    assert describe_tree(tree) == (1, first)
    (tree / "d" / "f").chmod(0o600)
    assert describe_tree(tree)[1] != first
    (tree / "d" / "f").chmod(0o644)
    (tree / "l").unlink()
    (tree / "l").symlink_to("d")
    assert describe_tree(tree)[1] != first


def test_the_real_template_is_built_from_the_repo_script() -> None:
    store = TemplateStore(Path("/var/cache/dnah/templates"), BUILD_SCRIPT)
    template = store.ensure()
    assert template.name == "dnah-base"
    assert (template.rootfs / "usr" / "bin" / "python3").exists()
    for tool in ("sudo", "pip3"):
        assert (template.rootfs / "usr" / "bin" / tool).exists(), tool
    assert (template.rootfs / "usr" / "bin" / "sudo").stat().st_mode & 0o4000  # setuid
    assert (template.rootfs / "usr" / "lib" / "python3" / "dist-packages" / "pip").is_dir()
    assert (template.rootfs / "usr" / "lib" / "python3.11" / "venv").is_dir()
    passwd = (template.rootfs / "etc" / "passwd").read_text()
    assert "daytona:x:1000:1000::/home/daytona:/bin/bash" in passwd
    assert "user:x:1001:1001::/home/user:/bin/bash" in passwd
    sudoers = template.rootfs / "etc" / "sudoers.d" / "dnah"
    assert sudoers.read_text().split("\n")[:2] == [
        "daytona ALL=(ALL:ALL) NOPASSWD: ALL",
        "user ALL=(ALL:ALL) NOPASSWD: ALL",
    ]
    assert sudoers.stat().st_mode & 0o777 == 0o440
    assert (template.rootfs / "workspace").stat().st_uid == 1000
    record = store.record(template)
    assert record.hash == template.content_hash and record.size_bytes > 100 * 2**20
