"""PID 1 of a dnah microVM: set the machine up, run the agent as the OCI runtime does, power off cleanly.

The initramfs (hosts/vm/initramfs.py) mounts the root disk and ``switch_root``s to
``python3 -S /opt/dnah/guest/vminit.py``, running as root. In order:

1. Mount what a Debian system expects: /proc, /sys, /dev (the devtmpfs the initramfs moved
   here), /dev/pts, /dev/shm, /run (with /run/lock), /sys/fs/cgroup (cgroup2). /tmp stays
   on the disk, as in Debian 12 and in the OCI runtime's sandboxes.
2. Read ``BootParams`` from /proc/cmdline (``guest/vmproto.py``): hostname (also
   /etc/hostname, /etc/hosts), /etc/resolv.conf, eth0's address and default route
   (``guest/vmnet.py``); a machine id on first boot.
3. Start the channel (``guest/channel.py``): the virtio-serial port demultiplexed, or vsock
   ports; port 52 goes to the agent's socket, port 53 to ``control`` here (root-only work:
   ``Configure``, ``IdentityRefresh``, ``SetClock``, ``Poweroff``, see contracts/vm.py).
4. If ``configure`` is set, wait for the host's ``Configure`` (the sandbox's environment).
5. Start the agent exactly as runc does in hosts/runtime/oci/bundle.py: uid/gid 1000 with
   supplementary group 1000, cwd and HOME /home/daytona, PATH/HOME/LANG then the spec's
   variables then PYTHONPATH=/opt/dnah, ``python3 -S -m guest.agent --uds
   /run/dnah/agent.sock``, oom_score_adj 500. Without ``--init``: vminit is the reaper.
6. Loop: reap every child (orphans come to PID 1); restart the agent when it dies (backoff
   up to 5 s); on SIGTERM, SIGINT (also Ctrl-Alt-Del), SIGUSR2 or SIGPWR (busybox's and
   sysvinit's ``poweroff``) or a ``Poweroff`` message: stop the agent, then everything else,
   sync, unmount, remount / read-only, power off.

Signals reach the loop through ``signal.set_wakeup_fd`` (the handlers do nothing), never as
exceptions, so no step is cut in half; nothing is blocked, so children inherit no signal mask.
Child processes are only started from the main thread, so the main loop's ``waitpid(-1)`` never
steals another waiter's status. Lines starting ``dnah-vminit:`` on the console say what happened.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time

if __name__ == "__main__":  # run as a script by the initramfs: make ``guest`` importable
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from guest import identity, vmnet, vmproto, vmsys

AGENT_PORT = 52
AGENT_SOCKET = "/run/dnah/agent.sock"
GUEST_ROOT = "/opt/dnah"
SERIAL_PORT = "/dev/vport0p1"
SANDBOX_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_HOME = "/home/daytona"
INTERFACE = "eth0"
SHUTDOWN_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR2, signal.SIGPWR)
RESTART_MIN_S, RESTART_MAX_S, HEALTHY_S = 0.1, 5.0, 30.0
STOP_GRACE_S = 5.0
INTERFACE_WAIT_S = 10.0

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any


def console(message: str) -> None:
    """A line on the VM's console, stamped with the guest's uptime (as the kernel's lines are)."""
    print(f"dnah-vminit: [{time.monotonic():.3f}] {message}", flush=True)


# 1. mounts -------------------------------------------------------------------------------------

_PLAIN = vmsys.MS_NOSUID | vmsys.MS_NODEV | vmsys.MS_NOEXEC
MOUNTS: tuple[tuple[str, str, str, int, str | None], ...] = (
    # (source, target, type, flags, data); skipped when the target is already a mount point
    ("proc", "/proc", "proc", _PLAIN, None),
    ("sysfs", "/sys", "sysfs", _PLAIN, None),
    ("devtmpfs", "/dev", "devtmpfs", vmsys.MS_NOSUID, "mode=0755"),
    ("devpts", "/dev/pts", "devpts", vmsys.MS_NOSUID | vmsys.MS_NOEXEC, "gid=5,mode=0620,ptmxmode=0666"),
    ("tmpfs", "/dev/shm", "tmpfs", vmsys.MS_NOSUID | vmsys.MS_NODEV, "mode=1777"),
    ("tmpfs", "/run", "tmpfs", vmsys.MS_NOSUID | vmsys.MS_NODEV, "mode=0755,size=20%"),
    ("cgroup2", "/sys/fs/cgroup", "cgroup2", _PLAIN, None),
)


def mount_filesystems() -> None:
    for source, target, fstype, flags, data in MOUNTS:
        os.makedirs(target, exist_ok=True)
        if os.path.ismount(target):
            continue
        vmsys.mount(source, target, fstype, flags, data)
    os.makedirs("/run/lock", mode=0o1777, exist_ok=True)
    os.chmod("/run/lock", 0o1777)  # noqa: S103 — sticky and world-writable, as Debian has it
    with contextlib.suppress(OSError):
        os.chmod("/tmp", 0o1777)  # noqa: S103 — likewise


# 2. machine ------------------------------------------------------------------------------------


def set_up_machine(params: dict[str, Any]) -> None:
    identity.set_hostname(params["hostname"], identity.ETC)
    if not os.path.exists(identity.ETC / "machine-id"):
        identity.write_machine_id(os.urandom(16).hex(), identity.ETC)
    if params["dns"]:
        identity.write_file(identity.ETC / "resolv.conf", "".join(f"nameserver {s}\n" for s in params["dns"]))
    if params["address"] is not None:
        deadline = time.monotonic() + INTERFACE_WAIT_S
        while not os.path.exists(f"/sys/class/net/{INTERFACE}") and time.monotonic() < deadline:
            time.sleep(0.01)
    vmnet.configure(INTERFACE, params["address"], params["gateway"])
    run_dir = os.path.dirname(AGENT_SOCKET)
    os.makedirs(run_dir, exist_ok=True)
    os.chown(run_dir, params["agent_uid"], params["agent_gid"])
    os.chmod(run_dir, 0o755)  # noqa: S103 — the agent's socket directory; the socket is 0600


# 3. control ------------------------------------------------------------------------------------


class Control:
    """The handler behind ``CONTROL_PORT``: one JSON line in, one reply line out, per message."""

    def __init__(self) -> None:
        self.configured = threading.Event()
        self.env: dict[str, str] = {}

    def serve(self, conn: socket.socket) -> None:
        """Answer the messages of one control stream until the host closes it."""
        with conn.makefile("rb") as reader:
            while line := reader.readline(vmproto.MAX_CONTROL_LINE + 1):
                if len(line) > vmproto.MAX_CONTROL_LINE or not line.endswith(b"\n"):
                    conn.sendall(vmproto.encode_reply("control line too long or cut short"))
                    return
                conn.sendall(self.handle(line))

    def handle(self, line: bytes) -> bytes:
        try:
            message = vmproto.parse_control(line)
            kind = message["t"]
            if kind == "configure":
                if self.configured.is_set():
                    return vmproto.encode_reply("already configured: the agent has started")
                self.env = message["env"]
                self.configured.set()
            elif kind == "identity":
                identity.apply(message)
                console(f"identity refreshed: {message['hostname']}")
            elif kind == "clock":
                time.clock_settime_ns(time.CLOCK_REALTIME, message["unix_time_ns"])
            elif kind == "poweroff":
                os.kill(os.getpid(), signal.SIGTERM)
        except vmproto.Invalid as exc:
            return vmproto.encode_reply(f"invalid: {exc}")
        except OSError as exc:
            return vmproto.encode_reply(f"failed: {exc}")
        return vmproto.encode_reply()


def start_channel(params: dict[str, Any], control: Control) -> None:
    """Serve the host's streams in background threads (``guest/channel.py``): port 52 to the
    agent's socket, port 53 to ``control``."""
    from guest import channel

    targets = {
        AGENT_PORT: channel.agent_target(AGENT_SOCKET),
        vmproto.CONTROL_PORT: channel.in_process(control.serve),
    }
    if params["channel"] == "vsock":
        for port, target in targets.items():
            threading.Thread(target=channel.serve_vsock, args=(port, target), daemon=True).start()
    else:
        threading.Thread(target=channel.serve_port, args=(SERIAL_PORT, targets), daemon=True).start()


# 5. the agent ----------------------------------------------------------------------------------


def agent_command(params: dict[str, Any], env: dict[str, str]) -> tuple[list[str], dict[str, Any]]:
    """The agent's argv and ``subprocess.Popen`` keywords (ids, cwd, environment)."""
    uid, gid = params["agent_uid"], params["agent_gid"]
    try:
        home = pwd.getpwuid(uid).pw_dir
    except KeyError:
        home = DEFAULT_HOME
    full_env = {"PATH": SANDBOX_PATH, "HOME": home, "LANG": "C.UTF-8", **env, "PYTHONPATH": GUEST_ROOT}
    argv = [sys.executable or "/usr/bin/python3", "-S", "-m", "guest.agent", "--uds", AGENT_SOCKET]
    options = {
        "user": uid,
        "group": gid,
        "extra_groups": [gid],
        "cwd": home if os.path.isdir(home) else "/",
        "env": full_env,
        "stdin": subprocess.DEVNULL,
        "close_fds": True,
    }
    return argv, options


def start_agent(params: dict[str, Any], env: dict[str, str]) -> int:
    argv, options = agent_command(params, env)
    proc = subprocess.Popen(argv, **options)
    with contextlib.suppress(OSError), open(f"/proc/{proc.pid}/oom_score_adj", "w") as f:
        f.write("500")
    console(f"agent started (pid {proc.pid})")
    return proc.pid


# 6. the loop -----------------------------------------------------------------------------------


class Init:
    """The reaping, restarting and shutting-down loop of PID 1."""

    def __init__(self, params: dict[str, Any], control: Control) -> None:
        self.params = params
        self.control = control
        self.agent: int | None = None
        self.agent_started = 0.0
        self.backoff = RESTART_MIN_S
        self.restart_at: float | None = None
        self.stopping = False
        wake_read, wake_write = os.pipe()
        os.set_blocking(wake_write, False)
        os.set_blocking(wake_read, False)
        self.wake = wake_read
        signal.set_wakeup_fd(wake_write)
        for signum in (signal.SIGCHLD, *SHUTDOWN_SIGNALS):
            signal.signal(signum, _noop)
        with contextlib.suppress(OSError):
            vmsys.reboot(vmsys.RB_DISABLE_CAD)

    def run(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self.wake, selectors.EVENT_READ)
            if self.params["configure"]:
                console("waiting for the host's configuration")
                while not self.control.configured.wait(0.2):
                    if self._signals(selector, 0) & set(SHUTDOWN_SIGNALS):
                        return
            self._start()
            while True:
                timeout = None if self.restart_at is None else max(0.0, self.restart_at - time.monotonic())
                if self._signals(selector, timeout) & set(SHUTDOWN_SIGNALS):
                    return
                if self.restart_at is not None and time.monotonic() >= self.restart_at:
                    self.restart_at = None
                    self._start()

    def _signals(self, selector: selectors.BaseSelector, timeout: float | None) -> set[int]:
        """Wait up to ``timeout`` for signals; reap children; return the signals seen."""
        seen: set[int] = set()
        if selector.select(timeout):
            with contextlib.suppress(BlockingIOError):
                seen = set(os.read(self.wake, 256))
        self._reap()
        return seen

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self.agent:
                self.agent = None
                if self.stopping:
                    continue
                ran = time.monotonic() - self.agent_started
                self.backoff = RESTART_MIN_S if ran > HEALTHY_S else min(self.backoff * 2, RESTART_MAX_S)
                code = os.waitstatus_to_exitcode(status)
                console(f"agent exited (status {code}); restart in {self.backoff:.1f} s")
                self.restart_at = time.monotonic() + self.backoff

    def _start(self) -> None:
        try:
            self.agent = start_agent(self.params, self.control.env)
            self.agent_started = time.monotonic()
        except OSError as exc:
            console(f"agent did not start: {exc}")
            self.backoff = min(self.backoff * 2, RESTART_MAX_S)
            self.restart_at = time.monotonic() + self.backoff

    def shut_down(self) -> None:
        """Stop the agent, then every other process; sync; unmount; power off."""
        console("shutting down")
        self.stopping = True
        if self.agent is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.agent, signal.SIGTERM)
            self._wait_children(lambda: self.agent is None, STOP_GRACE_S)
        for signum, grace in ((signal.SIGTERM, STOP_GRACE_S), (signal.SIGKILL, 1.0)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(-1, signum)  # every process but PID 1
            if self._wait_children(_no_children, grace):
                break
        os.sync()
        unmount_all()
        os.sync()
        console("power off")
        vmsys.reboot(vmsys.RB_POWER_OFF)

    def _wait_children(self, done: Callable[[], bool], seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while True:
            self._reap()
            if done():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)


def _no_children() -> bool:
    try:
        os.waitpid(-1, os.WNOHANG)
    except ChildProcessError:
        return True
    return False


def unmount_all() -> None:
    """Detach every mount but / (deepest first), then make / read-only so the disk is clean."""
    with open("/proc/self/mounts") as table:
        points = [line.split()[1] for line in table]
    for point in sorted(set(points) - {"/", "/proc", "/dev"}, key=len, reverse=True):
        with contextlib.suppress(OSError):
            vmsys.umount(point.replace("\\040", " "), vmsys.MNT_DETACH)
    try:
        vmsys.mount("none", "/", None, vmsys.MS_REMOUNT | vmsys.MS_RDONLY)
    except OSError as exc:
        console(f"could not remount / read-only: {exc}")


def _noop(_signum: int, _frame: object) -> None:
    """A Python-level handler makes the wakeup fd fire; the loop does the work."""


def main() -> None:
    if os.getpid() != 1:
        print("vminit runs as PID 1 of a VM", file=sys.stderr)
        sys.exit(2)
    init: Init | None = None
    try:
        os.umask(0o022)
        mount_filesystems()
        with open("/proc/cmdline") as f:
            params = vmproto.parse_cmdline(f.read())
        set_up_machine(params)
        control = Control()
        init = Init(params, control)
        start_channel(params, control)
        console(
            f"ready: {params['hostname']} {params['address'] or 'no network'} channel={params['channel']}"
        )
        init.run()
    except BaseException as exc:  # PID 1 must never exit: the kernel would panic
        console(f"fatal: {exc!r}")
    if init is None:
        os.sync()
        vmsys.reboot(vmsys.RB_POWER_OFF)
    else:
        init.shut_down()


if __name__ == "__main__":
    main()
