"""The agent's file handlers (``fs.*`` in ``contracts/guest.py``): metadata and text
operations. The byte streams (``fs.write``/``fs.read``) are in ``guest/transfer.py``.

Confinement. The agent runs inside the sandbox, as the sandbox user, in the sandbox's own
mount namespace after ``pivot_root``: its ``/`` is the sandbox's root and nothing of the host
is reachable from it. Paths are therefore resolved by the kernel like those of any process in
the sandbox, with no path arithmetic of ours that could be fooled: ``/../../etc/hostname`` is
the sandbox's ``/etc/hostname``, a symlink to ``/etc/shadow`` names the sandbox's
(unreadable) shadow file, ``/proc/self/root`` is the sandbox's root. Relative paths start at
the sandbox user's home.

Errors. A missing path is ``not_found``, a wrong kind of file (a directory where a file is
needed, or the reverse) ``bad_request``, a refusal of the kernel (EACCES, EPERM, EROFS)
``forbidden`` with the kernel's own words.

Walks (``fs.find_names``, ``fs.grep``, ``fs.replace`` over a directory) do not follow
symlinks, read regular files only (a FIFO would block forever), skip what they may not read,
and stop at ``max`` results or after ``FS_WALK_BUDGET_MS``, saying ``truncated``.

Stdlib only, like the rest of the agent.
"""

from __future__ import annotations

import errno
import fnmatch
import grp
import os
import pwd
import re
import shutil
import stat
import time
from collections.abc import Callable, Iterator

from guest import framing

BINARY_PROBE = 8192
"""Bytes read to decide whether a file is text: a NUL among them makes it binary."""


class FsError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def handle(request: framing.FsRequest, base_env: dict[str, str]) -> dict[str, object]:
    """Answer one ``fs.*`` request; failures become ``error`` replies."""
    home = base_env.get("HOME") or "/"
    try:
        return _HANDLERS[request.kind](request, home)
    except FsError as exc:
        return framing.error(request.id, exc.code, str(exc))
    except OSError as exc:
        return framing.error(request.id, *os_error(exc))


def os_error(exc: OSError) -> tuple[str, str]:
    where = f"{exc.filename}: " if exc.filename else ""
    message = f"{where}{exc.strerror or exc}"
    if exc.errno == errno.ENOENT:
        return "not_found", message
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "forbidden", message
    if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
        return "conflict", message
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "no_space", message
    return "bad_request", message


def resolve(path: str | None, home: str) -> str:
    if not path:
        raise FsError("bad_request", "'path' must not be empty")
    if "\0" in path:
        raise FsError("bad_request", "a path must not contain NUL")
    return os.path.normpath(os.path.join(home, path))


# entries --------------------------------------------------------------------------------------

_TYPE_LETTERS = (
    (stat.S_ISDIR, "d"),
    (stat.S_ISLNK, "L"),
    (stat.S_ISBLK, "D"),
    (stat.S_ISFIFO, "p"),
    (stat.S_ISSOCK, "S"),
)


def go_mode(st_mode: int) -> str:
    """The mode as Go's ``FileMode.String()`` spells it: type and special-bit letters (or
    ``-``), then ``rwx`` triplets."""
    letters = "".join(letter for test, letter in _TYPE_LETTERS if test(st_mode))
    if stat.S_ISCHR(st_mode):
        letters += "Dc"
    if st_mode & stat.S_ISUID:
        letters += "u"
    if st_mode & stat.S_ISGID:
        letters += "g"
    if st_mode & stat.S_ISVTX:
        letters += "t"
    bits = "".join(char if st_mode & (1 << (8 - i)) else "-" for i, char in enumerate("rwxrwxrwx"))
    return (letters or "-") + bits


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _group(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _entry(path: str, st: os.stat_result, name: str | None = None) -> dict[str, object]:
    link = None
    if stat.S_ISLNK(st.st_mode):
        try:
            link = os.readlink(path)
        except OSError:
            link = None
    return framing.fs_entry(
        name=name if name is not None else (os.path.basename(path) or "/"),
        path=path,
        is_dir=stat.S_ISDIR(st.st_mode),
        size=st.st_size,
        mode=go_mode(st.st_mode),
        permissions=f"0{stat.S_IMODE(st.st_mode) & 0o777:03o}",
        owner=_user(st.st_uid),
        group=_group(st.st_gid),
        mtime_ns=st.st_mtime_ns,
        link_target=link,
    )


def _deadline() -> float:
    return time.monotonic() + framing.FS_WALK_BUDGET_MS / 1000


def _cap(value: int) -> int:
    if value < 1:
        raise FsError("bad_request", "'max' must be at least 1")
    return min(value, framing.FS_MAX_RESULTS)


# handlers -------------------------------------------------------------------------------------


def _list(request: framing.FsRequest, home: str) -> dict[str, object]:
    root = resolve(request.path, home)
    if request.depth < 1:
        raise FsError("bad_request", "'depth' must be at least 1")
    if not stat.S_ISDIR(os.stat(root).st_mode):
        raise FsError("bad_request", f"{root}: not a directory")
    entries: list[dict[str, object]] = []
    deadline = _deadline()
    truncated = False

    def walk(directory: str, level: int) -> None:
        nonlocal truncated
        try:
            names = sorted(os.listdir(directory))
        except OSError:
            if directory == root:
                raise
            return
        for name in names:
            if len(entries) >= framing.FS_MAX_RESULTS or time.monotonic() > deadline:
                truncated = True
                return
            full = os.path.join(directory, name)
            try:
                st = os.lstat(full)
            except OSError:
                continue
            entries.append(_entry(full, st, name))
            if level < request.depth and stat.S_ISDIR(st.st_mode):
                walk(full, level + 1)

    walk(root, 1)
    return framing.fs_list_result(request.id, entries, truncated)


def _stat(request: framing.FsRequest, home: str) -> dict[str, object]:
    path = resolve(request.path, home)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        st = os.lstat(path)  # a dangling symlink is described itself
    return framing.fs_stat_result(request.id, _entry(path, st))


def octal(mode: str) -> int:
    text = mode.strip().lower().removeprefix("0o")
    try:
        value = int(text, 8)
    except ValueError:
        raise FsError("bad_request", f"invalid mode {mode!r}: octal digits expected") from None
    if not 0 <= value <= 0o7777:
        raise FsError("bad_request", f"invalid mode {mode!r}")
    return value


def _mkdir(request: framing.FsRequest, home: str) -> dict[str, object]:
    path = resolve(request.path, home)
    mode = octal(request.mode or "755")
    missing: list[str] = []
    current = path
    while not os.path.lexists(current):
        missing.append(current)
        current = os.path.dirname(current)
    if not os.path.isdir(current):
        raise FsError("bad_request", f"{current}: exists and is not a directory")
    created: list[str] = []
    for directory in reversed(missing):
        try:
            os.mkdir(directory)
        except FileExistsError:
            continue  # created concurrently
        created.append(directory)
    for directory in reversed(created):  # deepest first: a mode without x must not block the rest
        os.chmod(directory, mode)  # exactly the mode asked for, whatever the umask
    return framing.fs_done(request.id)


def _remove(request: framing.FsRequest, home: str) -> dict[str, object]:
    path = resolve(request.path, home)
    if path == "/":
        raise FsError("bad_request", "refusing to remove /")
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(path)
    elif request.recursive:
        shutil.rmtree(path)
    else:
        raise FsError("bad_request", f"{path}: is a directory (remove it with recursive)")
    return framing.fs_done(request.id)


def _move(request: framing.FsRequest, home: str) -> dict[str, object]:
    source = resolve(request.source, home)
    destination = resolve(request.destination, home)
    os.lstat(source)
    if os.path.lexists(destination):
        raise FsError("conflict", f"{destination}: already exists")
    parent = os.path.dirname(destination)
    if not os.path.isdir(parent):
        raise FsError("not_found", f"{parent}: no such directory")
    try:
        os.rename(source, destination)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        shutil.move(source, destination)
    return framing.fs_done(request.id)


def _chmod(request: framing.FsRequest, home: str) -> dict[str, object]:
    path = resolve(request.path, home)
    if request.mode is None and request.owner is None and request.group is None:
        raise FsError("bad_request", "give at least one of 'mode', 'owner', 'group'")
    os.stat(path)
    uid = _uid(request.owner) if request.owner else -1
    gid = _gid(request.group) if request.group else -1
    if uid != -1 or gid != -1:
        try:
            os.chown(path, uid, gid)
        except PermissionError as exc:
            raise FsError(
                "forbidden",
                f"{path}: {exc.strerror}: the sandbox user may only give its own files to a group it"
                " belongs to (changing the owner needs root)",
            ) from None
    if request.mode is not None:
        os.chmod(path, octal(request.mode))
    return framing.fs_done(request.id)


def _uid(owner: str) -> int:
    if owner.isdigit():
        return int(owner)
    try:
        return pwd.getpwnam(owner).pw_uid
    except KeyError:
        raise FsError("bad_request", f"unknown user {owner!r}") from None


def _gid(group: str) -> int:
    if group.isdigit():
        return int(group)
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise FsError("bad_request", f"unknown group {group!r}") from None


def _walk(root: str, deadline: float) -> Iterator[tuple[str, str, os.stat_result]]:
    """``(path, path relative to root, lstat)`` of everything under ``root``, depth first,
    names sorted; symlinks are not followed and unreadable directories are skipped. Stops
    (raising ``TimeoutError``) past ``deadline``."""
    stack = [root]
    while stack:
        directory = stack.pop()
        try:
            names = sorted(os.listdir(directory), reverse=True)
        except OSError:
            if directory == root:
                raise
            continue
        subdirs: list[str] = []
        for name in reversed(names):
            if time.monotonic() > deadline:
                raise TimeoutError
            full = os.path.join(directory, name)
            try:
                st = os.lstat(full)
            except OSError:
                continue
            yield full, os.path.relpath(full, root), st
            if stat.S_ISDIR(st.st_mode):
                subdirs.append(full)
        stack.extend(reversed(subdirs))


def _find_names(request: framing.FsRequest, home: str) -> dict[str, object]:
    root = resolve(request.path, home)
    limit = _cap(request.max)
    if not request.pattern:
        raise FsError("bad_request", "'pattern' must not be empty")
    if not stat.S_ISDIR(os.stat(root).st_mode):
        raise FsError("bad_request", f"{root}: not a directory")
    by_path = "/" in request.pattern
    paths: list[str] = []
    truncated = False
    try:
        for full, relative, _st in _walk(root, _deadline()):
            if fnmatch.fnmatchcase(relative if by_path else os.path.basename(full), request.pattern):
                if len(paths) >= limit:
                    truncated = True
                    break
                paths.append(full)
    except TimeoutError:
        truncated = True
    return framing.fs_paths_result(request.id, paths, truncated)


def _matcher(pattern: str, regex: bool) -> Callable[[bytes], bool]:
    if not pattern:
        raise FsError("bad_request", "'pattern' must not be empty")
    if not regex:
        needle = pattern.encode()
        return lambda line: needle in line
    try:
        compiled = re.compile(pattern.encode())
    except re.error as exc:
        raise FsError("bad_request", f"invalid regular expression: {exc}") from None
    return lambda line: compiled.search(line) is not None


def _is_text(path: str) -> bool:
    with open(path, "rb") as probe:
        return b"\0" not in probe.read(BINARY_PROBE)


def _text_files(root: str, deadline: float, glob: str | None = None) -> Iterator[str]:
    """``root`` itself if it is a file, else the regular files under it (matching ``glob``)."""
    st = os.stat(root)
    if not stat.S_ISDIR(st.st_mode):
        if not stat.S_ISREG(st.st_mode):  # a FIFO would block the read forever
            raise FsError("bad_request", f"{root}: not a regular file")
        yield root
        return
    for full, _relative, entry in _walk(root, deadline):
        if not stat.S_ISREG(entry.st_mode):
            continue
        if glob is None or fnmatch.fnmatchcase(os.path.basename(full), glob):
            yield full


def _grep(request: framing.FsRequest, home: str) -> dict[str, object]:
    root = resolve(request.path, home)
    limit = _cap(request.max)
    matches_line = _matcher(request.pattern, request.regex)
    matches: list[dict[str, object]] = []
    truncated = False
    single = not stat.S_ISDIR(os.stat(root).st_mode)
    try:
        for path in _text_files(root, _deadline()):
            try:
                if not _is_text(path):
                    continue
                with open(path, "rb") as handle:
                    for number, raw in enumerate(handle, 1):
                        if matches_line(raw):
                            if len(matches) >= limit:
                                truncated = True
                                break
                            content = raw.rstrip(b"\r\n").decode("utf-8", "replace")
                            matches.append(framing.fs_match(path, number, content[: framing.FS_LINE_MAX]))
            except OSError:
                if single:
                    raise
                continue
            if truncated:
                break
    except TimeoutError:
        truncated = True
    return framing.fs_grep_result(request.id, matches, truncated)


def _replace(request: framing.FsRequest, home: str) -> dict[str, object]:
    if not request.find:
        raise FsError("bad_request", "'find' must not be empty")
    if request.regex:
        try:
            compiled = re.compile(request.find.encode())
        except re.error as exc:
            raise FsError("bad_request", f"invalid regular expression: {exc}") from None
    else:
        compiled = re.compile(re.escape(request.find.encode()))
    replacement = request.replace.encode()
    if request.files:
        if request.path is not None or request.glob is not None:
            raise FsError("bad_request", "give either 'files' or 'path' (and 'glob'), not both")
        targets = [resolve(name, home) for name in request.files]
    elif request.path:
        targets = []
        deadline = _deadline()
        try:
            for path in _text_files(resolve(request.path, home), deadline, request.glob):
                if len(targets) >= framing.FS_MAX_RESULTS:
                    break
                targets.append(path)
        except TimeoutError:
            pass
    else:
        raise FsError("bad_request", "give 'files' or 'path'")
    results = [_replace_in(path, compiled, replacement, request.regex) for path in targets]
    return framing.fs_replace_result(request.id, results)


def _replace_in(path: str, compiled: re.Pattern[bytes], replacement: bytes, regex: bool) -> dict[str, object]:
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return framing.fs_replace_outcome(path, False, error="not a regular file")
        with open(path, "rb") as handle:
            data = handle.read()
        if b"\0" in data[:BINARY_PROBE]:
            return framing.fs_replace_outcome(path, False, error="binary file")
        if regex:
            new, count = compiled.subn(replacement, data)
        else:
            new, count = compiled.subn(lambda _match: replacement, data)
        if count:
            with open(path, "r+b") as handle:  # in place: inode, mode and owner stay
                handle.write(new)
                handle.truncate()
        return framing.fs_replace_outcome(path, True, count)
    except re.error as exc:
        return framing.fs_replace_outcome(path, False, error=f"invalid replacement: {exc}")
    except OSError as exc:
        return framing.fs_replace_outcome(path, False, error=os_error(exc)[1])


_HANDLERS: dict[str, Callable[[framing.FsRequest, str], dict[str, object]]] = {
    "fs.list": _list,
    "fs.stat": _stat,
    "fs.mkdir": _mkdir,
    "fs.remove": _remove,
    "fs.move": _move,
    "fs.chmod": _chmod,
    "fs.find_names": _find_names,
    "fs.grep": _grep,
    "fs.replace": _replace,
}
