"""hostd ↔ guest agent: the framed protocol spoken on a sandbox's agent channel.

Transport. The host opens the sandbox's agent socket (a Unix socket) and performs Cloud
Hypervisor's hybrid-vsock handshake: it writes ``CONNECT <AGENT_PORT>\\n`` and reads back
``OK <n>\\n``. Under Cloud Hypervisor the VMM answers the handshake and the agent listens on
AF_VSOCK; under the namespace runtime the agent answers it itself. After the handshake the
stream carries frames, in both directions, for as long as the connection lives.

Framing. Each frame is a 4-byte big-endian header followed by a payload. Bit 31 of the header
is the *binary* flag, bits 0–30 the payload length. A JSON frame (flag clear) is one UTF-8 JSON
object with an integer ``id`` (chosen by the host, echoed by the agent) and a type tag ``t``.
A binary frame (flag set) carries raw bytes that belong to the JSON frame sent just before it
on the same connection, so bulk data (file streams, PTY output) never goes through base64.
Several requests may be in flight on one connection; replies are matched by ``id``, and a
request may be answered by several frames (streams end with a final typed frame).

One source of truth. The guest agent is stdlib-only Python (the template's python3 has no
msgspec), so it cannot import this module: ``guest/framing.py`` and ``guest/requests.py``
restate it by hand. This module is the source of truth and the restatement is proven, not
trusted: ``tests/contracts/test_guest_wire.py`` enumerates every request and reply type here
(``HostToGuest``, ``StreamOpener``, ``GuestToHost``, ``StreamReply`` and the structs they
nest), generates samples that set every field, and checks that the agent parses what hostd
encodes (field by field, reading exactly the fields declared here), that hostd decodes what
the agent's builders produce (byte for byte), and that neither side has a message type or a
field the other lacks. Adding a field on one side only fails that test.

Versions. ``PROTOCOL_VERSION`` is bumped on every change to the messages; the agent's copy
(``guest.framing.PROTOCOL_VERSION``) must be equal, and the agent reports it in ``Pong``.
hostd pings every fresh connection and refuses an agent that speaks another version with
``AgentIncompatible`` (``hosts/agent_client.py``): a memory snapshot freezes the agent of its
day into the sandbox's image, so the two can drift apart (docs/runtimes.md, "Guest protocol
versions").

Requests and their replies:

==============  ======================  ===================================================
request ``t``   reply ``t``             what
==============  ======================  ===================================================
``ping``        ``pong``                liveness and protocol version
``exec``        ``exec.result``         run an argv to completion
``code.run``    ``exec.result``         run a code snippet with the language's interpreter
``dirs``        ``dirs.result``         the home, working and project directories
``metrics``     ``metrics.result``      CPU and memory limits and use, load
``git.*``       ``git.*`` (see below)   clone, status, add, commit, push, pull, branches, checkout, log
``fs.*``        ``fs.*`` (see below)    list, stat, mkdir, remove, move, chmod, find names, grep, replace
``fs.watch.*``  ``fs.watch.*``          file watchers: create, the events since the last call, remove
``pty.*``       ``pty.*`` (see below)   terminals: create, list, get, kill, resize (attach is a stream)
``proc.spawn``  ``proc.*`` (see below)  a process with its stdin, stdout and stderr (a stream)
``proc.start``  ``proc.*`` (see below)  a process kept in the agent's registry (a stream)
``proc.*``      ``proc.*`` (see below)  the registry: connect (a stream), list, signal, input,
                                        close stdin, resize
==============  ======================  ===================================================

Any request may instead be answered with ``error`` (``REPLIES`` maps each request type to its
reply type). hostd's generic relay (``POST /sandboxes/{id}/agent``, see ``contracts/host.py``)
carries any of these requests from the core to the agent and the reply back, so a new
operation is a new pair of messages here, a handler in the agent and a method in the core.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from contracts.fields import (
    Arg,
    Argv,
    DeadlineMs,
    EnvMap,
    Int32,
    Name,
    Path,
    Positive,
    Secret,
    Text,
    TimeoutMs,
    Url,
    check_command_size,
)

AGENT_PORT = 52
"""The vsock port the agent listens on (the ``CONNECT`` argument)."""

PROTOCOL_VERSION = 11
"""Bumped on every change to the messages below; the agent reports it in ``pong`` and hostd
refuses an agent that reports another (``hosts.errors.AgentIncompatible``)."""

BINARY_FLAG = 0x8000_0000
LENGTH_MASK = 0x7FFF_FFFF
MAX_JSON_FRAME = 16 * 1024 * 1024
"""Largest JSON frame either end accepts; bigger data goes in binary frames."""


class _Msg(msgspec.Struct, frozen=True, kw_only=True, tag_field="t"):
    id: int


# host → guest -------------------------------------------------------------------------------


class Ping(_Msg, frozen=True, tag="ping"):
    """Liveness and version check; answered with ``Pong``."""


class Exec(_Msg, frozen=True, tag="exec"):
    """Run ``argv`` to completion. ``env`` is added to the agent's base environment.

    On timeout the agent kills the command's whole process group and answers with
    ``timed_out=True`` and ``exit_code=-9``.
    """

    argv: Annotated[Argv, msgspec.Meta(min_length=1)]
    env: EnvMap = {}
    cwd: Path | None = None
    timeout_ms: DeadlineMs = 60_000

    def __post_init__(self) -> None:
        check_command_size(self.argv, self.env)


Language = Literal["python", "bash", "javascript", "typescript"]


class CodeRun(_Msg, frozen=True, tag="code.run"):
    """Run ``code`` with the language's interpreter; answered with ``ExecResult``.

    ``python`` runs ``python3 -c code argv...``, ``bash`` runs ``bash -c code bash argv...``,
    ``javascript`` runs ``node -e code -- argv...``. ``typescript`` runs the same way as
    ``javascript``: the template's Node cannot strip types, so TypeScript-only syntax (type
    annotations, interfaces) fails with Node's ``SyntaxError`` and exit code 1. Code too long
    for one argument (``CODE_ARG_MAX`` bytes) is written to a private temporary file that the
    interpreter runs instead and that is removed afterwards. Timeouts behave as in ``Exec``.
    """

    language: Language
    code: Text
    argv: Argv = []
    env: EnvMap = {}
    cwd: Path | None = None
    timeout_ms: DeadlineMs = 60_000

    def __post_init__(self) -> None:
        check_command_size(self.argv, self.env)


class Dirs(_Msg, frozen=True, tag="dirs"):
    """The sandbox's directories; answered with ``DirsResult``."""


class EnvSet(_Msg, frozen=True, tag="env.set"):
    """Add ``env`` to the agent's base environment, for every command started from now on
    (a warm-pool sandbox gets its owner's environment when it is claimed). Answered with
    ``EnvDone``."""

    env: EnvMap


class Metrics(_Msg, frozen=True, tag="metrics"):
    """What the sandbox sees of its limits and use; answered with ``MetricsResult``."""


class SessionCreate(_Msg, frozen=True, tag="session.create"):
    """Start a persistent shell (one ``bash``) in ``cwd`` (default: the home); answered with
    ``SessionResult``. No ``session_id`` means a new UUID; an existing one is a ``conflict``."""

    session_id: Name | None = None
    cwd: Path | None = None


class SessionList(_Msg, frozen=True, tag="session.list"):
    """Every session, with its commands (no output); answered with ``SessionListResult``."""


class SessionGet(_Msg, frozen=True, tag="session.get"):
    """One session and its last 100 commands; with ``output``, each command's stdout and
    stderr, at most ``SESSION_HISTORY_OUTPUT`` bytes each. Answered with ``SessionResult``."""

    session_id: Name
    output: bool = False


class SessionDelete(_Msg, frozen=True, tag="session.delete"):
    """Kill the session's shell and everything it started; answered with ``SessionResult``."""

    session_id: Name


class SessionExec(_Msg, frozen=True, tag="session.exec"):
    """Run ``command`` in the session's shell (``cd``/``export`` persist); answered with
    ``SessionCommandResult``. Commands of a session run one after another; the deadline
    (``timeout_ms``, 0 for none) counts from this request. At the deadline the processes the
    command started are killed, not the shell, and the result says ``timed_out`` with exit
    code -9. With ``run_async`` the reply comes at once, ``exit_code`` null until it ends. A
    command that exits the shell ends the session (``alive`` false afterwards)."""

    session_id: Name
    command: Text
    timeout_ms: TimeoutMs = 60_000
    run_async: bool = False


class SessionCommand(_Msg, frozen=True, tag="session.command"):
    """A command's state, without output; answered with ``SessionCommandResult``."""

    session_id: Name
    command_id: Name


class SessionLogs(_Msg, frozen=True, tag="session.logs"):
    """A command's state and output so far (up to 1 MiB per stream); answered with
    ``SessionCommandResult``."""

    session_id: Name
    command_id: Name


# guest → host -------------------------------------------------------------------------------


class Pong(_Msg, frozen=True, tag="pong"):
    """``version``: the agent's ``PROTOCOL_VERSION``; ``agent``: its name and release.

    Every hostd must decode the pong of every agent, older or newer, to tell it apart, so this
    message never changes shape: its fields stay optional (a pong without ``version`` comes
    from an agent that predates the check, and is refused as one) and new ones get defaults.
    """

    version: int | None = None
    agent: str = ""


class ExecResult(_Msg, frozen=True, tag="exec.result"):
    stdout: str
    stderr: str
    exit_code: int
    duration_ms: float
    timed_out: bool = False
    truncated: bool = False
    """Output past 1 MiB on a stream was dropped (the command ran to its end regardless)."""


class EnvDone(_Msg, frozen=True, tag="env.done"):
    """The environment was updated."""


class DirsResult(_Msg, frozen=True, tag="dirs.result"):
    """``home``: the sandbox user's home. ``work``: the agent's working directory, where
    commands without a ``cwd`` start (the runtime starts the agent in the home).
    ``project``: ``/workspace`` if it is a directory, else the home."""

    home: str
    work: str
    project: str


class MetricsResult(_Msg, frozen=True, tag="metrics.result"):
    """Read from the cgroup the sandbox sees at /sys/fs/cgroup (v1 or v2); where it sets no
    limit (a VM has none inside), the machine's own figures stand in.

    ``cpus``: CFS quota / period (3 decimals), else the CPUs the agent may run on.
    ``mem_limit_bytes``: the memory limit, never more than the kernel's MemTotal.
    ``mem_used_bytes``: the cgroup's memory use minus its inactive file cache (what
    ``docker stats`` reports), else MemTotal - MemAvailable.
    ``load_1m``: /proc/loadavg's first figure, as the sandbox sees it: a VM's own load, but
    the shared kernel's under the namespace runtime (load averages are not namespaced).
    """

    cpus: float
    mem_limit_bytes: int
    mem_used_bytes: int
    load_1m: float


class SessionCommandInfo(msgspec.Struct, frozen=True, kw_only=True):
    """One command of a session. ``exit_code`` is null while it runs; ``cwd`` is the shell's
    directory after it (null if it ended the shell)."""

    command_id: str
    command: str
    exit_code: int | None = None
    timed_out: bool = False
    cwd: str | None = None
    stdout: str = ""
    stderr: str = ""


class SessionInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A session: its shell's current directory, whether the shell still runs, and its
    commands, oldest first."""

    session_id: str
    cwd: str
    alive: bool
    commands: list[SessionCommandInfo] = []


class SessionResult(_Msg, frozen=True, tag="session.result"):
    session: SessionInfo


class SessionListResult(_Msg, frozen=True, tag="session.list.result"):
    sessions: list[SessionInfo]


class SessionCommandResult(_Msg, frozen=True, tag="session.command.result"):
    command: SessionCommandInfo


class Error(_Msg, frozen=True, tag="error"):
    """A request failed inside the agent. ``code`` is one of ``bad_request``, ``not_found``,
    ``forbidden`` (the kernel refused the sandbox user), ``conflict``, ``unsupported``,
    ``internal``."""

    code: str
    message: str


# git (run with the sandbox's own git CLI, as the sandbox user) ------------------------------
#
# ``path`` is the repository (the clone's target for ``git.clone``); relative paths start at
# the agent's working directory. ``username``/``password`` are handed to that one git process
# through its environment and a credential helper given on its command line, never written to
# disk: not to the repository's config, not to its remote URL, not to a file. A failing git
# command is answered with ``error`` ``bad_request`` carrying git's own message (``not_found``
# when ``path`` does not exist).

GIT_TIMEOUT_MS = 300_000
"""How long a git command may run (clone, push and pull reach the network)."""
GIT_LOG_MAX = 10_000
GitLogLimit = Annotated[int, msgspec.Meta(ge=1, le=GIT_LOG_MAX)]


class GitClone(_Msg, frozen=True, tag="git.clone"):
    """``git clone`` ``url`` into ``path``; ``commit_id`` then detaches HEAD at that commit.
    Answered with ``GitDone``."""

    url: Url
    path: Path
    branch: Name | None = None
    depth: Positive | None = None
    commit_id: Name | None = None
    username: Secret | None = None
    password: Secret | None = None
    timeout_ms: TimeoutMs = GIT_TIMEOUT_MS


class GitStatus(_Msg, frozen=True, tag="git.status"):
    """Answered with ``GitStatusResult``."""

    path: Path


class GitAdd(_Msg, frozen=True, tag="git.add"):
    """Stage ``files`` (relative to the repository root); answered with ``GitDone``."""

    path: Path
    files: list[Path]


class GitCommit(_Msg, frozen=True, tag="git.commit"):
    """Commit what is staged, as ``author_name <author_email>`` when given (both author and
    committer); answered with ``GitCommitResult``."""

    path: Path
    message: Arg
    author_name: Name | None = None
    author_email: Name | None = None
    allow_empty: bool = False

    def __post_init__(self) -> None:
        check_command_size([self.message], None)  # git gets it as one argument


class GitPush(_Msg, frozen=True, tag="git.push"):
    """Push ``branch`` (default: the current one) to ``remote`` (default ``origin``);
    answered with ``GitDone``."""

    path: Path
    remote: Name | None = None
    branch: Name | None = None
    username: Secret | None = None
    password: Secret | None = None
    set_upstream: bool = False
    timeout_ms: TimeoutMs = GIT_TIMEOUT_MS


class GitPull(_Msg, frozen=True, tag="git.pull"):
    """Pull ``branch`` from ``remote`` (default: the current branch's upstream); answered with
    ``GitDone``."""

    path: Path
    remote: Name | None = None
    branch: Name | None = None
    username: Secret | None = None
    password: Secret | None = None
    timeout_ms: TimeoutMs = GIT_TIMEOUT_MS


class GitBranches(_Msg, frozen=True, tag="git.branches"):
    """The local branches; answered with ``GitBranchesResult``."""

    path: Path


class GitBranchCreate(_Msg, frozen=True, tag="git.branch.create"):
    """Create branch ``name`` at HEAD (without switching to it); answered with ``GitDone``."""

    path: Path
    name: Name


class GitBranchDelete(_Msg, frozen=True, tag="git.branch.delete"):
    """Delete local branch ``name``, merged or not; answered with ``GitDone``."""

    path: Path
    name: Name


class GitCheckout(_Msg, frozen=True, tag="git.checkout"):
    """Switch to ``ref`` (a branch, also one only a remote has, or a commit); answered with
    ``GitDone``."""

    path: Path
    ref: Name


class GitLog(_Msg, frozen=True, tag="git.log"):
    """The newest ``limit`` commits reachable from HEAD; answered with ``GitLogResult``."""

    path: Path
    limit: GitLogLimit = 100


class GitDone(_Msg, frozen=True, tag="git.done"):
    """A git operation that has nothing to report succeeded."""


class GitFileStatus(msgspec.Struct, frozen=True, kw_only=True):
    """One changed path as ``git status --porcelain=v2`` reports it: ``staging`` and
    ``worktree`` are its X and Y letters (``.`` unmodified, ``M``, ``A``, ``D``, ``R``, ``C``,
    ``U`` unmerged, ``?`` untracked); ``orig_path`` is a rename's or copy's source."""

    path: str
    staging: str
    worktree: str
    orig_path: str | None = None


class GitStatusResult(_Msg, frozen=True, tag="git.status.result"):
    """``branch`` is empty when HEAD is detached; ``upstream`` empty when there is none."""

    branch: str
    detached: bool
    upstream: str
    ahead: int
    behind: int
    files: list[GitFileStatus]


class GitCommitResult(_Msg, frozen=True, tag="git.commit.result"):
    sha: str


class GitBranchesResult(_Msg, frozen=True, tag="git.branches.result"):
    """``current`` is empty when HEAD is detached."""

    branches: list[str]
    current: str


class GitCommitInfo(msgspec.Struct, frozen=True, kw_only=True):
    """``timestamp``: the author date, ISO 8601 with its offset."""

    sha: str
    author_name: str
    author_email: str
    timestamp: str
    message: str


class GitLogResult(_Msg, frozen=True, tag="git.log.result"):
    commits: list[GitCommitInfo]


# files (metadata, not byte streams) ---------------------------------------------------------
#
# Paths are resolved by the agent inside the sandbox, as the sandbox user, like any system
# call of its own: relative paths start at the user's home, ``..`` stops at the sandbox's root
# and symlinks resolve inside the sandbox (the agent's root is the sandbox's). A missing path
# is ``not_found``, a wrong kind of file ``bad_request``, a refusal of the kernel
# (EACCES/EPERM) ``forbidden``. Walks (``fs.find_names``, ``fs.grep``, ``fs.replace`` over
# ``path``) never follow symlinks, read regular files only and stop at ``max`` results or
# after ``FS_WALK_BUDGET_MS``, saying ``truncated``.

FS_MAX_RESULTS = 10_000
"""Largest ``max`` of a walk and most entries ``fs.list`` returns."""
Results = Annotated[int, msgspec.Meta(ge=1, le=FS_MAX_RESULTS)]
FS_WALK_BUDGET_MS = 20_000
"""How long a walk may take: less than the 30 s hostd waits for a reply."""


class FsList(_Msg, frozen=True, tag="fs.list"):
    """The entries of directory ``path``, sorted by name; ``depth`` > 1 also lists their
    children (each right after its directory; symlinked directories are not entered).
    Answered with ``FsListResult``."""

    path: Path
    depth: Positive = 1


class FsStat(_Msg, frozen=True, tag="fs.stat"):
    """``path``'s entry (a symlink is followed; a dangling one is described itself).
    Answered with ``FsStatResult``."""

    path: Path


class FsMkdir(_Msg, frozen=True, tag="fs.mkdir"):
    """``mkdir -p path``; the directories it creates get ``mode`` (octal, umask not applied).
    An existing directory is fine. Answered with ``FsDone``."""

    path: Path
    mode: Name = "755"


class FsRemove(_Msg, frozen=True, tag="fs.remove"):
    """Remove a file, a symlink (not its target) or, with ``recursive``, a directory and
    everything in it. Answered with ``FsDone``."""

    path: Path
    recursive: bool = False


class FsMove(_Msg, frozen=True, tag="fs.move"):
    """Rename ``source`` to ``destination`` (across filesystems: copy, then remove). An
    existing destination is a ``conflict``; its parent must exist. Answered with ``FsDone``."""

    source: Path
    destination: Path


class FsChmod(_Msg, frozen=True, tag="fs.chmod"):
    """Set ``mode`` (octal) and/or ``owner``/``group`` (names or numeric ids) of ``path``;
    null leaves one unchanged. Answered with ``FsDone``."""

    path: Path
    mode: Name | None = None
    owner: Name | None = None
    group: Name | None = None


class FsFindNames(_Msg, frozen=True, tag="fs.find_names"):
    """Files and directories under ``path`` whose name matches the glob ``pattern`` (a
    pattern with ``/`` matches the path relative to ``path``). Answered with
    ``FsPathsResult``."""

    path: Path
    pattern: Text
    max: Results = 1000


class FsGrep(_Msg, frozen=True, tag="fs.grep"):
    """Lines containing ``pattern`` (a regular expression with ``regex``) in ``path`` or the
    text files under it; files with a NUL byte in their first 8 KiB are skipped. Answered
    with ``FsGrepResult``."""

    path: Path
    pattern: Text
    max: Results = 1000
    regex: bool = False


class FsReplace(_Msg, frozen=True, tag="fs.replace"):
    """Replace every ``find`` (a regular expression with ``regex``) with ``replace`` in
    ``files``, or in the text files under ``path`` whose name matches ``glob`` (all without
    one). Answered with ``FsReplaceResult``: one outcome per file, failures included."""

    find: Text
    replace: Text
    files: list[Path] = []
    path: Path | None = None
    glob: Path | None = None
    regex: bool = False


class FsEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One file. ``path`` is absolute. ``mode`` is Go's ``FileMode.String()`` (what
    Daytona's daemon reports: ``-rw-r--r--``, ``drwxr-xr-x``, ``Lrwxrwxrwx``); ``permissions``
    the permission bits in octal (``0644``). ``owner``/``group`` are names where the sandbox
    knows them, else numeric ids. ``mtime_ns``: nanoseconds since the epoch. ``link_target``:
    a symlink's target."""

    name: str
    path: str
    is_dir: bool
    size: int
    mode: str
    permissions: str
    owner: str
    group: str
    mtime_ns: int
    link_target: str | None = None


class FsDone(_Msg, frozen=True, tag="fs.done"):
    """A file operation that has nothing to report succeeded."""


class FsListResult(_Msg, frozen=True, tag="fs.list.result"):
    entries: list[FsEntry]
    truncated: bool = False


class FsStatResult(_Msg, frozen=True, tag="fs.stat.result"):
    entry: FsEntry


class FsPathsResult(_Msg, frozen=True, tag="fs.paths.result"):
    paths: list[str]
    truncated: bool = False


class FsMatch(msgspec.Struct, frozen=True, kw_only=True):
    """``line`` counts from 1; ``content`` is the line without its newline (at most
    ``FS_LINE_MAX`` characters)."""

    file: str
    line: int
    content: str


class FsGrepResult(_Msg, frozen=True, tag="fs.grep.result"):
    matches: list[FsMatch]
    truncated: bool = False


class FsReplaceOutcome(msgspec.Struct, frozen=True, kw_only=True):
    file: str
    success: bool
    replacements: int = 0
    error: str | None = None


class FsReplaceResult(_Msg, frozen=True, tag="fs.replace.result"):
    results: list[FsReplaceOutcome]


FS_LINE_MAX = 1000


# File watchers -------------------------------------------------------------------------------
#
# ``fs.watch.create`` starts watching the directory ``path`` (resolved as the other ``fs.*``
# paths are: a missing one is ``not_found``, a file ``bad_request``) and, with ``recursive``,
# every directory below it, those there now and those that appear later (on the same
# filesystem: ``/proc`` below ``/`` is not entered; symlinks are not followed). From then on
# the agent queues what changes there, and ``fs.watch.events`` takes what was queued since the
# previous call (or the create). An event's ``name`` is the entry's path relative to the
# watched directory; its ``type`` is ``create`` (also the new name of a rename, as Go's
# fsnotify reports it), ``write``, ``remove``, ``rename`` (the old name of a rename) or
# ``chmod`` (mode, owner, times). An event equal to the one queued just before it is not
# queued again (a large write is many writes). What a new directory already holds when its
# watch is added is reported as created. The agent's own uploads (``fs.write``) show as
# ``create`` and ``write`` of their target; their temporary file is never reported. The agent
# uses inotify; only where the kernel offers none does it compare listings every half second
# (a rename then shows as ``remove`` and ``create``).
#
# Bounds. ``FS_WATCH_QUEUE`` events, and ``FS_WATCH_QUEUE_BYTES`` of them encoded, are kept
# per watcher; later ones are dropped and the next ``fs.watch.events`` says ``overflow`` (as it
# does after the kernel's own queue overflowed, or when a new directory could not be watched):
# the client should read the directory again. A sandbox has at most ``FS_WATCH_DIRS`` watched
# directories (a create that needs more is ``bad_request``) and ``FS_WATCH_MAX`` watchers: a
# create beyond that drops the watcher asked for events least recently if that was
# ``FS_WATCH_IDLE_MS`` ago (its client is most likely gone), else it is a ``conflict``. An
# unknown ``watch_id`` is ``not_found``. Watchers live in the agent's memory: a sandbox stop
# ends them.

FS_WATCH_MAX = 32
"""Watchers per sandbox."""
FS_WATCH_DIRS = 8192
"""Directories watched per sandbox, all watchers together (inotify watches are a per-user
kernel resource)."""
FS_WATCH_QUEUE = 10_000
"""Events kept per watcher between two ``fs.watch.events``."""
FS_WATCH_QUEUE_BYTES = 4 * 1024 * 1024
"""Bytes of encoded events kept per watcher (so a reply always fits ``MAX_JSON_FRAME``)."""
FS_WATCH_IDLE_MS = 600_000
"""How long a watcher must have gone unasked before a create may drop it to make room."""

FsWatchEventType = Literal["create", "write", "remove", "rename", "chmod"]


class FsWatchCreate(_Msg, frozen=True, tag="fs.watch.create"):
    """Watch directory ``path`` (with ``recursive``, the tree below it); answered with
    ``FsWatchCreated``."""

    path: Path
    recursive: bool = False


class FsWatchEvents(_Msg, frozen=True, tag="fs.watch.events"):
    """The events queued since the previous call; answered with ``FsWatchEventsResult``."""

    watch_id: Name


class FsWatchRemove(_Msg, frozen=True, tag="fs.watch.remove"):
    """Stop watching and drop what is queued; answered with ``FsDone``."""

    watch_id: Name


class FsWatchCreated(_Msg, frozen=True, tag="fs.watch.created"):
    watch_id: str


class FsWatchEvent(msgspec.Struct, frozen=True, kw_only=True):
    """``name``: the entry's path relative to the watched directory."""

    name: str
    type: FsWatchEventType


class FsWatchEventsResult(_Msg, frozen=True, tag="fs.watch.events.result"):
    """Oldest first. ``overflow``: events were lost since the previous call."""

    events: list[FsWatchEvent]
    overflow: bool = False


# Streams --------------------------------------------------------------------------------------
#
# A byte stream (a file's content, a terminal) gets a connection of its own: its opener must be
# the first frame after the handshake, and the connection then carries that stream only, until
# either side closes it. One connection per stream gives each stream the transport's own flow
# control (a slow reader stalls its own writer, never a neighbour's request on the shared
# connection), and closing the connection is the one way to abort a stream. Binary frames
# carry the bytes, at most ``MAX_BINARY_FRAME`` each; an *empty* binary frame ends a direction.
# Openers are not ``HostToGuest`` messages, so hostd's relay can never send one on the shared
# connection, and the agent answers an opener that arrives on a connection already in use with
# ``error`` (``bad_request``).

MAX_BINARY_FRAME = 1024 * 1024
"""Largest binary frame either end sends or accepts."""


class FsWrite(_Msg, frozen=True, tag="fs.write"):
    """Replace the file ``path`` with the bytes that follow.

    The agent creates missing parent directories, opens a temporary file next to ``path`` and
    answers ``FsReady`` (or ``error``, before any byte is sent: a directory at ``path`` is
    ``bad_request``, a refusal of the kernel ``forbidden``). The host then sends the content in
    binary frames and an empty binary frame; the agent renames the temporary file over ``path``
    and answers ``FsWritten``. If the connection ends before the empty frame, the temporary
    file is removed and ``path`` is as it was: an upload is all or nothing. ``mode`` (octal)
    is the new file's mode; without it an existing file keeps its mode and a new one gets 0644.
    """

    path: Path
    mode: Name | None = None


class FsRead(_Msg, frozen=True, tag="fs.read"):
    """Send the content of the regular file ``path``: ``FsReading`` (its size when opened),
    binary frames, an empty binary frame. An ``error`` instead of ``FsReading`` means nothing
    was read (``not_found``, ``bad_request`` for a directory, ``forbidden``); an ``error``
    after some data means the read failed midway and the bytes sent are incomplete."""

    path: Path


class FsReady(_Msg, frozen=True, tag="fs.ready"):
    """The agent is ready for an ``FsWrite``'s bytes."""


class FsWritten(_Msg, frozen=True, tag="fs.written"):
    """An ``FsWrite`` is complete: ``path`` (absolute) now holds ``size`` bytes."""

    path: str
    size: int


class FsReading(_Msg, frozen=True, tag="fs.reading"):
    """An ``FsRead``'s file is open: ``path`` (absolute), ``size`` bytes when opened."""

    path: str
    size: int


# Terminals (PTY sessions) ------------------------------------------------------------------
#
# A PTY session is a named object of the agent: an interactive login ``bash`` as the sandbox
# user, on a pseudo-terminal, in a process session of its own with the terminal as its
# controlling tty. ``session_id`` is 1-128 letters, digits, ``.``, ``_`` or ``-`` (starting
# with a letter or digit); at most ``PTY_MAX_SESSIONS`` exist per sandbox. The agent drains
# the terminal's output continuously, whether or not a client is attached, and keeps the last
# ``PTY_SCROLLBACK`` bytes, which every attaching client receives first.
#
# Lifetime. A session made by ``pty.create`` (``ephemeral`` false) lives until ``pty.kill``,
# or until its shell exits; it then stays listed with ``active`` false and its exit code until
# killed. A session made by ``pty.attach`` with ``create`` (``ephemeral``: a terminal opened by
# a WebSocket) is killed when its last client detaches, and forgotten once its shell exits.
# Killing a session sends SIGHUP to every process of its process session, then SIGKILL to
# those left after ``PTY_KILL_GRACE_MS``, so a dropped client leaves no process behind.
#
# Attaching is a stream (see "Streams"): ``pty.attach`` opens it, the agent answers
# ``pty.attached`` (or ``error``) and then sends the terminal's output in binary frames; the
# host sends input in binary frames and may send ``pty.resize`` JSON frames (not answered). An
# empty binary frame from the host, or the connection's end, detaches. When the shell exits
# the agent sends ``pty.exited`` and nothing more; the host then closes the connection.

PTY_MAX_SESSIONS = 32
"""PTY sessions per sandbox (exited ones that nobody watches are dropped first)."""
PTY_SCROLLBACK = 64 * 1024
"""Bytes of recent output each session keeps and replays to a client that attaches."""
PTY_MAX_SIZE = 1000
"""Largest ``cols`` and ``rows`` (Daytona's limit); the smallest is 1."""
TermSize = Annotated[int, msgspec.Meta(ge=1, le=PTY_MAX_SIZE)]
PTY_KILL_GRACE_MS = 1000
"""How long the processes of a killed session get between SIGHUP and SIGKILL."""


class PtyInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A PTY session. ``active``: its shell runs (false before a lazy session's first attach,
    and after the shell exited, when ``exit_code`` is set). ``created_at``: ISO 8601, UTC.
    ``clients``: how many streams are attached. ``pid``: the shell's, inside the sandbox."""

    session_id: str
    cols: int
    rows: int
    cwd: str
    env: dict[str, str]
    created_at: str
    active: bool
    exit_code: int | None = None
    clients: int = 0
    ephemeral: bool = False
    lazy_start: bool = False
    pid: int | None = None


class PtyCreate(_Msg, frozen=True, tag="pty.create"):
    """Create a session that outlives its clients; answered with ``PtyResult``. No
    ``session_id`` means a new UUID; an existing one is a ``conflict``. ``env`` goes on top of
    the agent's base environment (``TERM`` defaults to ``xterm-256color``); ``cwd`` defaults
    to the home and must be a directory (else ``bad_request``). With ``lazy_start`` the shell
    starts at the first attach."""

    session_id: Name | None = None
    cols: TermSize = 80
    rows: TermSize = 24
    cwd: Path | None = None
    env: EnvMap = {}
    lazy_start: bool = False


class PtyList(_Msg, frozen=True, tag="pty.list"):
    """Every session, oldest first; answered with ``PtyListResult``."""


class PtyGet(_Msg, frozen=True, tag="pty.get"):
    """Answered with ``PtyResult``."""

    session_id: Name


class PtyKill(_Msg, frozen=True, tag="pty.kill"):
    """Kill the session's processes (see "Lifetime") and forget it; attached clients get
    ``pty.exited``. Answered with ``PtyResult`` (the session as it ended)."""

    session_id: Name


class PtyResize(_Msg, frozen=True, tag="pty.resize"):
    """Set the terminal's size (the shell gets SIGWINCH); answered with ``PtyResult``, or
    ``conflict`` when the shell has exited. Also sent, unanswered, on an attach stream."""

    session_id: Name
    cols: TermSize
    rows: TermSize


class PtyResult(_Msg, frozen=True, tag="pty.result"):
    session: PtyInfo


class PtyListResult(_Msg, frozen=True, tag="pty.list.result"):
    sessions: list[PtyInfo]


class PtyAttach(_Msg, frozen=True, tag="pty.attach"):
    """Open a stream to session ``session_id``. With ``create`` the session is made first,
    ``ephemeral`` (``cols``, ``rows``, ``cwd``, ``env`` as in ``PtyCreate``; an existing id is
    a ``conflict``); without it they are ignored and a missing session is ``not_found``, an
    exited one ``conflict``. Answered with ``PtyAttached``, then output."""

    session_id: Name
    create: bool = False
    cols: TermSize = 80
    rows: TermSize = 24
    cwd: Path | None = None
    env: EnvMap = {}


class PtyAttached(_Msg, frozen=True, tag="pty.attached"):
    """The stream is attached; the scrollback follows in binary frames, then live output."""

    session: PtyInfo


class PtyExited(_Msg, frozen=True, tag="pty.exited"):
    """The session's shell exited (or the session was killed: ``exit_code`` is then the
    shell's, e.g. -1 for SIGHUP); the last frame of an attach stream."""

    exit_code: int


# Processes (the SSH gateway's commands, SFTP and scp) ---------------------------------------
#
# ``proc.spawn`` opens a stream to a new process: ``argv`` run as the sandbox user, in a
# process session of its own, with pipes for stdin, stdout and stderr. The agent answers
# ``proc.started`` (or ``error``: ``not_found`` for a missing program, ``bad_request`` for a
# bad ``cwd``), then sends the output in binary frames whose first byte says which stream
# the rest belongs to (``PROC_STDOUT`` or ``PROC_STDERR``); a frame of that byte alone is the
# end of that stream. The host sends stdin in binary frames (no prefix: only stdin goes that
# way); an empty binary frame closes the process's stdin. Once the process has exited and
# both of its output pipes are at their end the agent sends ``proc.exited`` and nothing more;
# the host then closes the connection.
# The connection's end before that kills every process of the process's session (SIGHUP,
# then SIGKILL after ``PTY_KILL_GRACE_MS``), so a dropped client leaves nothing behind.

PROC_STDOUT = 1
"""First byte of an output frame carrying the process's stdout."""
PROC_STDERR = 2
"""First byte of an output frame carrying the process's stderr."""


class ProcSpawn(_Msg, frozen=True, tag="proc.spawn"):
    """Start ``argv`` (``env`` on top of the agent's base environment; ``cwd`` relative to the
    home, defaulting to it) and stream its stdio; answered with ``ProcStarted``."""

    argv: Argv
    env: EnvMap = {}
    cwd: Path | None = None


class ProcStarted(_Msg, frozen=True, tag="proc.started"):
    """The process runs; ``pid`` is its pid inside the sandbox."""

    pid: int


class ProcExited(_Msg, frozen=True, tag="proc.exited"):
    """The process exited with ``exit_code`` (``-N`` when signal N killed it); the last frame
    of a process stream. ``timed_out``: a ``ProcStart``'s ``timeout_ms`` ran out and the agent
    killed the process's session (``exit_code`` is then -9)."""

    exit_code: int
    timed_out: bool = False


# The process registry (E2B's envd ``process`` service, background commands) ------------------
#
# Every process started with ``proc.start`` (and every ``proc.spawn``) is an entry of one
# registry in the agent, found by its ``pid`` (inside the sandbox) or by the ``tag`` given at
# its start. A tag names at most one running process (a start with the tag of a running one
# is a ``conflict``); an exited one keeps its tag until it is dropped, and a lookup by tag
# finds the newest process with it.
#
# ``proc.start`` opens a stream like ``proc.spawn`` does (same framing: ``proc.started``,
# output frames whose first byte is ``PROC_STDOUT``, ``PROC_STDERR`` or, for a process on a
# pseudo-terminal, ``PROC_PTY``; a frame of that byte alone ends that stream; then
# ``proc.exited``). The process runs as the sandbox user in a process session of its own,
# with pipes for its stdio or, with ``pty``, a pseudo-terminal as its controlling tty
# (stdout and stderr are then the one ``PROC_PTY`` stream). Unlike ``proc.spawn``, the
# connection's end only detaches: the process keeps running in the registry, its output is
# read (and kept) whether or not anyone is attached, and ``proc.connect`` attaches again.
# Binary frames from the host on a ``proc.start`` or ``proc.connect`` stream are the
# process's input (an empty one closes a pipe's stdin; on a terminal it is ignored), as on
# ``proc.spawn``.
#
# Output kept. The agent keeps each process's output from its start, at most
# ``PROC_OUTPUT_KEPT`` bytes per stream (the oldest dropped beyond that). ``proc.connect``
# replays it (in the order it was written, across streams), the ends of streams that have
# ended, then live output, then ``proc.exited``; several clients may be attached at once,
# and each gets every byte from there on. A slow client slows the process: once a client
# is ``PROC_CLIENT_BACKLOG`` bytes behind, no more is read until it catches up, so nothing
# is lost (as on ``proc.spawn``). A ``proc.start`` or ``proc.connect`` client that has not
# taken a byte for ``PROC_CLIENT_STALL_MS`` while that far behind (a background command
# whose stream nobody reads) is cut off instead: it gets what was queued for it, then
# ``error`` ``conflict``, and the process runs on (``proc.connect`` attaches again, from
# the kept output). A ``proc.spawn`` stream and a terminal's clients are never cut off (a
# spawned process, an ephemeral terminal's shell, ends with its client). Each client is
# written to on its own, so a slow or stalled one never holds up the others, an attach, or
# ``proc.exited``.
#
# The end. A process ends when it has exited and its output has ended (a background job
# holding a pipe keeps it running). ``timeout_ms`` counts from the start: at the deadline
# every process of its session gets SIGKILL and ``proc.exited`` says ``timed_out``. An
# ended process stays in the registry, listed with ``running`` false and its exit code,
# for ``PROC_KEEP_EXITED_MS`` (at most ``PROC_MAX_EXITED`` of them, holding at most
# ``PROC_EXITED_KEPT`` bytes of kept output together, the oldest dropped first), so a
# client that reconnects late still gets its output and exit code; after that it is
# ``not_found``. The registry holds at most ``PROC_MAX_RUNNING`` running processes
# (a start beyond that is a ``conflict``). A ``proc.spawn``'s process is killed when its
# stream ends (see above), and is listed while it runs, without a tag. The shells of shell
# sessions (``session.*``) and terminals (``pty.*``) are registry processes too, listed (and
# reachable by pid) like any other.
#
# Requests on the relay name a process by ``pid`` or, when ``pid`` is null, by ``tag``
# (neither is ``bad_request``); an unknown one is ``not_found``. ``proc.signal`` sends
# ``signal`` to every process of the process's session; ``proc.input`` writes ``data``
# (base64, at most ``PROC_INPUT_MAX`` bytes decoded) to its stdin or terminal, waiting up to
# ``PROC_INPUT_WAIT_MS`` for a process that does not read (then ``conflict``, with part of
# the data possibly written); ``proc.close_stdin`` closes a pipe's stdin; ``proc.resize``
# sets a terminal's size. An ended process, one started without ``stdin`` (input and close),
# and one without a terminal (resize, close stdin on a terminal) are a ``conflict``.

PROC_PTY = 3
"""First byte of an output frame carrying a pseudo-terminal's output."""
PROC_OUTPUT_KEPT = 1024 * 1024
"""Bytes of each output stream the registry keeps per process (the newest) for ``proc.connect``."""
PROC_KEEP_EXITED_MS = 300_000
"""How long an ended process stays in the registry for ``proc.connect`` and ``proc.list``."""
PROC_MAX_EXITED = 64
"""Ended processes kept at most (the oldest dropped first)."""
PROC_EXITED_KEPT = 16 * 1024 * 1024
"""Bytes of kept output the ended processes may hold together (the oldest dropped first):
the agent's memory is the sandbox's."""
PROC_MAX_RUNNING = 1024
"""Running processes the registry holds at most."""
PROC_INPUT_MAX = 8 * 1024 * 1024
"""Largest ``ProcInput`` in bytes (decoded); its base64 fits one JSON frame."""
PROC_INPUT_WAIT_MS = 10_000
"""How long a ``ProcInput`` waits for a process that does not read its input."""
PROC_CLIENT_BACKLOG = 1024 * 1024
"""Bytes of output queued for one attached client before the process waits for it."""
PROC_CLIENT_STALL_MS = 10_000
"""How long a ``proc.start``/``proc.connect`` client that far behind may take nothing before
it is cut off (the process runs on)."""
ProcInputData = Annotated[str, msgspec.Meta(max_length=(PROC_INPUT_MAX + 2) // 3 * 4)]
Signal = Annotated[int, msgspec.Meta(ge=1, le=64)]


Account = Annotated[str, msgspec.Meta(pattern=r"^[a-z_][a-z0-9_.-]{0,31}$")]
"""A sandbox account's name (what ``useradd`` accepts)."""


class ProcPty(msgspec.Struct, frozen=True, kw_only=True):
    """A pseudo-terminal's size for ``ProcStart``."""

    cols: TermSize
    rows: TermSize


class ProcStart(_Msg, frozen=True, tag="proc.start"):
    """Start ``argv`` (``env`` on top of the agent's base environment; ``cwd`` relative to the
    home, defaulting to it) as a registry entry (``tag`` optional) and stream its output;
    answered with ``ProcStarted`` (or ``error``: ``not_found`` for a missing program,
    ``bad_request`` for a bad ``cwd``, ``conflict`` for a tag in use). ``pty``: run it on a
    terminal of that size (``TERM`` defaults to ``xterm-256color``). ``stdin`` false: its stdin
    is /dev/null (ignored with ``pty``). ``timeout_ms``: kill it after that long. ``user``:
    run it as that account of the sandbox (``sudo -n -u``; ``HOME``, ``USER``, ``LOGNAME`` and
    the default ``cwd`` are that account's), ``not_found`` when there is none; None: the
    agent's own account."""

    argv: Annotated[Argv, msgspec.Meta(min_length=1)]
    env: EnvMap = {}
    cwd: Path | None = None
    tag: Name | None = None
    pty: ProcPty | None = None
    stdin: bool = True
    timeout_ms: DeadlineMs | None = None
    user: Account | None = None

    def __post_init__(self) -> None:
        check_command_size(self.argv, self.env)


class ProcConnect(_Msg, frozen=True, tag="proc.connect"):
    """Attach to the registry's process ``pid`` (or, when null, ``tag``): answered with
    ``ProcStarted``, then the output kept since its start, live output and ``ProcExited``
    (at once for an ended process); ``error`` ``not_found`` for an unknown one."""

    pid: Int32 | None = None
    tag: Name | None = None


class ProcList(_Msg, frozen=True, tag="proc.list"):
    """Every process of the registry, oldest first; answered with ``ProcListResult``."""


class ProcSignal(_Msg, frozen=True, tag="proc.signal"):
    """Send ``signal`` to every process of the process's session; answered with ``ProcDone``."""

    signal: Signal
    pid: Int32 | None = None
    tag: Name | None = None


class ProcInput(_Msg, frozen=True, tag="proc.input"):
    """Write ``data`` (base64) to the process's stdin or terminal; answered with ``ProcDone``."""

    data: ProcInputData
    pid: Int32 | None = None
    tag: Name | None = None


class ProcCloseStdin(_Msg, frozen=True, tag="proc.close_stdin"):
    """Close the process's stdin (a pipe); answered with ``ProcDone``."""

    pid: Int32 | None = None
    tag: Name | None = None


class ProcResize(_Msg, frozen=True, tag="proc.resize"):
    """Set the process's terminal size (it gets SIGWINCH); answered with ``ProcDone``."""

    cols: TermSize
    rows: TermSize
    pid: Int32 | None = None
    tag: Name | None = None


class ProcInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A registry entry. ``running``: not ended yet (see "The end"); ``exit_code`` is set
    once it ended. ``pty``: it runs on a terminal."""

    pid: int
    argv: list[str]
    env: dict[str, str]
    cwd: str
    pty: bool
    running: bool
    tag: str | None = None
    exit_code: int | None = None


class ProcListResult(_Msg, frozen=True, tag="proc.list.result"):
    processes: list[ProcInfo]


class ProcDone(_Msg, frozen=True, tag="proc.done"):
    """A ``proc.*`` relay request succeeded."""


StreamOpener = FsWrite | FsRead | PtyAttach | ProcSpawn | ProcStart | ProcConnect
"""The first frame of a stream connection."""
StreamReply = FsReady | FsWritten | FsReading | PtyAttached | PtyExited | ProcStarted | ProcExited | Error
"""The JSON frames the agent sends on a stream connection."""


HostToGuest = (
    Ping
    | Exec
    | CodeRun
    | Dirs
    | EnvSet
    | Metrics
    | GitClone
    | GitStatus
    | GitAdd
    | GitCommit
    | GitPush
    | GitPull
    | GitBranches
    | GitBranchCreate
    | GitBranchDelete
    | GitCheckout
    | GitLog
    | SessionCreate
    | SessionList
    | SessionGet
    | SessionDelete
    | SessionExec
    | SessionCommand
    | SessionLogs
    | FsList
    | FsStat
    | FsMkdir
    | FsRemove
    | FsMove
    | FsChmod
    | FsFindNames
    | FsGrep
    | FsReplace
    | FsWatchCreate
    | FsWatchEvents
    | FsWatchRemove
    | PtyCreate
    | PtyList
    | PtyGet
    | PtyKill
    | PtyResize
    | ProcList
    | ProcSignal
    | ProcInput
    | ProcCloseStdin
    | ProcResize
)
GuestToHost = (
    Pong
    | ExecResult
    | DirsResult
    | EnvDone
    | MetricsResult
    | GitDone
    | GitStatusResult
    | GitCommitResult
    | GitBranchesResult
    | GitLogResult
    | SessionResult
    | SessionListResult
    | SessionCommandResult
    | FsDone
    | FsListResult
    | FsStatResult
    | FsPathsResult
    | FsGrepResult
    | FsReplaceResult
    | FsWatchCreated
    | FsWatchEventsResult
    | PtyResult
    | PtyListResult
    | ProcListResult
    | ProcDone
    | Error
)

REPLIES: dict[type[HostToGuest], type[GuestToHost]] = {
    Ping: Pong,
    Exec: ExecResult,
    CodeRun: ExecResult,
    Dirs: DirsResult,
    EnvSet: EnvDone,
    Metrics: MetricsResult,
    GitClone: GitDone,
    GitStatus: GitStatusResult,
    GitAdd: GitDone,
    GitCommit: GitCommitResult,
    GitPush: GitDone,
    GitPull: GitDone,
    GitBranches: GitBranchesResult,
    GitBranchCreate: GitDone,
    GitBranchDelete: GitDone,
    GitCheckout: GitDone,
    GitLog: GitLogResult,
    SessionCreate: SessionResult,
    SessionList: SessionListResult,
    SessionGet: SessionResult,
    SessionDelete: SessionResult,
    SessionExec: SessionCommandResult,
    SessionCommand: SessionCommandResult,
    SessionLogs: SessionCommandResult,
    FsList: FsListResult,
    FsStat: FsStatResult,
    FsMkdir: FsDone,
    FsRemove: FsDone,
    FsMove: FsDone,
    FsChmod: FsDone,
    FsFindNames: FsPathsResult,
    FsGrep: FsGrepResult,
    FsReplace: FsReplaceResult,
    FsWatchCreate: FsWatchCreated,
    FsWatchEvents: FsWatchEventsResult,
    FsWatchRemove: FsDone,
    PtyCreate: PtyResult,
    PtyList: PtyListResult,
    PtyGet: PtyResult,
    PtyKill: PtyResult,
    PtyResize: PtyResult,
    ProcList: ProcListResult,
    ProcSignal: ProcDone,
    ProcInput: ProcDone,
    ProcCloseStdin: ProcDone,
    ProcResize: ProcDone,
}
"""The reply type of each request type (besides ``Error``, which answers any of them)."""

SESSION_HISTORY_OUTPUT = 8 * 1024
"""Bytes of each stream per command in ``SessionGet`` with ``output`` (100 commands must fit
one frame); ``SessionLogs`` gives a command's output up to 1 MiB per stream."""

CODE_ARG_MAX = 100_000
"""Bytes of ``CodeRun.code`` passed as an argument; longer code goes through a file, because
Linux limits one argument to 128 KiB (``MAX_ARG_STRLEN``)."""

_host_decoder = msgspec.json.Decoder(HostToGuest)
_opener_decoder = msgspec.json.Decoder(StreamOpener)
_stream_reply_decoder = msgspec.json.Decoder(StreamReply)
_any_decoder = msgspec.json.Decoder()
_guest_decoder = msgspec.json.Decoder(GuestToHost)
_encoder = msgspec.json.Encoder()


def encode(msg: msgspec.Struct) -> bytes:
    """Return ``msg`` as one JSON frame (header included)."""
    payload = _encoder.encode(msg)
    return len(payload).to_bytes(4, "big") + payload


def decode_from_guest(payload: bytes) -> GuestToHost:
    """Decode a JSON frame payload the agent sent."""
    return _guest_decoder.decode(payload)


def decode_from_host(payload: bytes) -> HostToGuest:
    """Decode a JSON frame payload the host sent (used by contract tests)."""
    return _host_decoder.decode(payload)


def decode_opener(payload: bytes) -> StreamOpener:
    """Decode the opener of a stream connection (used by contract tests)."""
    return _opener_decoder.decode(payload)


def decode_stream_reply(payload: bytes) -> StreamReply:
    """Decode a JSON frame the agent sent on a stream connection."""
    return _stream_reply_decoder.decode(payload)


def encode_binary(data: bytes | bytearray | memoryview) -> bytes:
    """The header of a binary frame carrying ``data`` (sent separately, so the data is never
    copied). ``data`` must be at most ``MAX_BINARY_FRAME`` bytes."""
    if len(data) > MAX_BINARY_FRAME:
        raise ValueError(f"a binary frame carries at most {MAX_BINARY_FRAME} bytes")
    return (len(data) | BINARY_FLAG).to_bytes(4, "big")


def decode_relayed(payload: bytes) -> HostToGuest:
    """Decode the body of hostd's relay route: one host → guest message, its ``id`` optional
    and ignored (hostd numbers the frames of its connection itself). An unknown ``t`` or a
    malformed message raises ``msgspec.ValidationError``; invalid JSON ``msgspec.DecodeError``
    (its parent)."""
    message = _any_decoder.decode(payload)
    if not isinstance(message, dict):
        raise msgspec.ValidationError("a message must be a JSON object")
    message["id"] = 0
    return msgspec.convert(message, HostToGuest)


def parse_header(header: bytes) -> tuple[int, bool]:
    """Split a 4-byte frame header into ``(length, is_binary)``."""
    value = int.from_bytes(header, "big")
    return value & LENGTH_MASK, bool(value & BINARY_FLAG)
