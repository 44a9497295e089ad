"""The uncompressed, PVH-bootable kernel ELF inside a bzImage, for Cloud Hypervisor.

QEMU boots the bzImage as it is; Cloud Hypervisor direct-boots only an ELF ``vmlinux`` that
carries a PVH entry point (the ``Xen`` ELF note of type ``XEN_ELFNOTE_PHYS32_ENTRY``, present
when the kernel is built with ``CONFIG_PVH``). Debian ships no vmlinux outside its -dbg
package, but every bzImage holds the vmlinux whole, compressed: the setup header
(``Documentation/arch/x86/boot.rst``) gives the compressed payload's offset and length; the
payload is one stream of the kernel's configured compressor, followed (for every compressor
but gzip, which records it itself) by the uncompressed size as a little-endian u32. We
decompress it with the matching command-line tool and check the result before keeping it.
"""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

from hosts.errors import RuntimeFailure

_SETUP_SECTS = 0x1F1
_HEADER_MAGIC = 0x202
_PAYLOAD = 0x248
"""``payload_offset`` (from the start of the protected-mode code) and ``payload_length``."""
_SECTOR = 512

_DECOMPRESSORS: tuple[tuple[bytes, list[str], bool], ...] = (
    # (magic, command reading stdin and writing stdout, size appended by the kernel build)
    (b"\x02\x21\x4c\x18", ["lz4", "-d", "-c"], True),
    (b"\x28\xb5\x2f\xfd", ["zstd", "-d", "-q", "-c"], True),
    (b"\xfd7zXZ\x00", ["xz", "-d", "-c"], True),
    (b"\x1f\x8b", ["gzip", "-d", "-c"], False),
)

_PT_NOTE = 4
_XEN_ELFNOTE_PHYS32_ENTRY = 18


def extract_vmlinux(bzimage: Path, out: Path) -> None:
    """Write the ELF in ``bzimage`` to ``out``; RuntimeFailure unless it is a PVH-bootable ELF."""
    data = bzimage.read_bytes()
    if data[_HEADER_MAGIC : _HEADER_MAGIC + 4] != b"HdrS":
        raise RuntimeFailure(f"{bzimage} is not a bzImage (no HdrS setup header)")
    setup_sects = data[_SETUP_SECTS] or 4
    offset, length = struct.unpack_from("<II", data, _PAYLOAD)
    start = (setup_sects + 1) * _SECTOR + offset
    payload = data[start : start + length]
    found = next((entry for entry in _DECOMPRESSORS if payload.startswith(entry[0])), None)
    if found is None:
        raise RuntimeFailure(f"{bzimage}: unknown payload compression (starts {payload[:6].hex()})")
    _magic, command, sized = found
    stream, expected = (payload[:-4], struct.unpack("<I", payload[-4:])[0]) if sized else (payload, None)
    done = subprocess.run(command, input=stream, capture_output=True, check=False)
    if done.returncode != 0:
        raise RuntimeFailure(f"{command[0]} could not decompress {bzimage}: {done.stderr.decode()[-300:]}")
    elf = done.stdout
    if expected is not None and len(elf) != expected:
        raise RuntimeFailure(f"{bzimage}: payload decompressed to {len(elf)} bytes, header says {expected}")
    if not has_pvh_note(elf):
        raise RuntimeFailure(f"{bzimage}: the kernel inside has no PVH entry note (CONFIG_PVH off?)")
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(elf)
    tmp.rename(out)


def has_pvh_note(elf: bytes) -> bool:
    """Whether ``elf`` is a 64-bit little-endian ELF with a ``Xen`` PHYS32_ENTRY note."""
    if elf[:4] != b"\x7fELF" or elf[4] != 2 or elf[5] != 1:
        return False
    phoff = struct.unpack_from("<Q", elf, 0x20)[0]
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    for index in range(phnum):
        p_type, _flags, p_offset, _vaddr, _paddr, p_filesz = struct.unpack_from(
            "<IIQQQQ", elf, phoff + index * phentsize
        )
        if p_type == _PT_NOTE and _notes_have_pvh(elf[p_offset : p_offset + p_filesz]):
            return True
    return False


def _notes_have_pvh(notes: bytes) -> bool:
    pos = 0
    while pos + 12 <= len(notes):
        namesz, descsz, note_type = struct.unpack_from("<III", notes, pos)
        name = notes[pos + 12 : pos + 12 + namesz].rstrip(b"\0")
        if name == b"Xen" and note_type == _XEN_ELFNOTE_PHYS32_ENTRY:
            return True
        pos += 12 + _align4(namesz) + _align4(descsz)
    return False


def _align4(n: int) -> int:
    return (n + 3) & ~3
