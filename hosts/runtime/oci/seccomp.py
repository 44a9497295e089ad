"""The sandboxes' seccomp profile, as data: what may be called, and why the rest may not.

The filter's default is ``EPERM``: a system call that is not listed below fails, for root
inside the sandbox as for anyone (seccomp applies whatever the caller's uid or capabilities).
The allowlist is grouped by purpose; ``REFUSED`` names what is deliberately left out, each
group with its reason, and docs/runtime.md ("Seccomp") is generated from the same words.
It is at least as strict as Docker's default profile: nothing Docker refuses is allowed here,
and ``io_uring`` and namespace creation by root are refused as well.

Four calls are allowed only with particular arguments:

* ``clone`` without any namespace flag (the mask below): threads and ``fork`` work, creating a
  namespace does not;
* ``clone3`` fails with ``ENOSYS``: its flags sit in a structure seccomp cannot read, and
  ``ENOSYS`` (not ``EPERM``) makes glibc fall back to ``clone``;
* ``ioctl`` except btrfs' volume requests (``BTRFS_VOL_IOCTLS``): among them subvolume and
  snapshot creation, which any file owner may call on a btrfs disk and which would make a
  subvolume whose writes the sandbox's disk quota does not count. Reflinks (``FICLONE``, what
  ``cp`` tries first) and every other ioctl stay allowed;
* ``personality`` with the harmless personas only (Linux, 32-bit Linux, the uname-2.6 flag,
  and the query ``0xffffffff``): others disable address-space randomisation and the like.

Only the x86-64 system call ABI is in the filter. A call through the 32-bit x86 (``int
0x80``) or x32 ABI matches no architecture of it and the kernel kills the caller (libseccomp's
bad-architecture action): the templates are 64-bit, those ABIs are old attack surface, and
libseccomp compiles every rule once per architecture at every ``runc run``, which with all
three cost 10-30 ms of each boot here.
"""

from __future__ import annotations

from typing import Any

EPERM = 1
ENOSYS = 38

NAMESPACE_FLAGS = (
    0x00020000  # CLONE_NEWNS
    | 0x02000000  # CLONE_NEWCGROUP
    | 0x04000000  # CLONE_NEWUTS
    | 0x08000000  # CLONE_NEWIPC
    | 0x10000000  # CLONE_NEWUSER
    | 0x20000000  # CLONE_NEWPID
    | 0x40000000  # CLONE_NEWNET
)
"""``clone`` is refused when its flags (argument 0 on x86-64) include any of these."""

BTRFS_VOL_IOCTLS = (0xFFFFFF00, 0x50009400)
"""(mask, value) of the refused ioctl requests: ``_IOW(0x94, nr, struct btrfs_ioctl_vol_args
or _v2)`` — both structs are 4,096 bytes — which is SNAP_CREATE(_V2), SUBVOL_CREATE(_V2),
SNAP_DESTROY, DEFRAG, RESIZE and the device calls. The kernel reads the request as 32 bits,
so only those are compared; seccomp has no "not equal under a mask", so the allow rules are
one per bit of the masked part: a request is allowed when any one of those bits differs."""

PERSONAS = (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF)
"""PER_LINUX, PER_LINUX32, UNAME26, UNAME26|PER_LINUX32 and the query: nothing that weakens
the address-space layout."""

ALLOWED: dict[str, tuple[str, ...]] = {
    "files": (
        "access",
        "chdir",
        "chmod",
        "chown",
        "close",
        "close_range",
        "copy_file_range",
        "creat",
        "dup",
        "dup2",
        "dup3",
        "faccessat",
        "faccessat2",
        "fadvise64",
        "fallocate",
        "fchdir",
        "fchmod",
        "fchmodat",
        "fchown",
        "fchownat",
        "fcntl",
        "fdatasync",
        "flock",
        "fstat",
        "fstatfs",
        "fsync",
        "ftruncate",
        "getcwd",
        "getdents",
        "getdents64",
        "getxattr",
        "fgetxattr",
        "lgetxattr",
        "link",
        "linkat",
        "listxattr",
        "flistxattr",
        "llistxattr",
        "lseek",
        "lstat",
        "mkdir",
        "mkdirat",
        "mknod",
        "mknodat",
        "newfstatat",
        "open",
        "openat",
        "openat2",
        "pread64",
        "preadv",
        "preadv2",
        "pwrite64",
        "pwritev",
        "pwritev2",
        "read",
        "readahead",
        "readlink",
        "readlinkat",
        "readv",
        "removexattr",
        "fremovexattr",
        "lremovexattr",
        "rename",
        "renameat",
        "renameat2",
        "rmdir",
        "sendfile",
        "setxattr",
        "fsetxattr",
        "lsetxattr",
        "splice",
        "stat",
        "statfs",
        "statx",
        "symlink",
        "symlinkat",
        "sync",
        "sync_file_range",
        "syncfs",
        "tee",
        "truncate",
        "umask",
        "unlink",
        "unlinkat",
        "utime",
        "utimensat",
        "utimes",
        "futimesat",
        "vmsplice",
        "write",
        "writev",
        "chroot",
        "inotify_add_watch",
        "inotify_init",
        "inotify_init1",
        "inotify_rm_watch",
        "memfd_create",
        "name_to_handle_at",
    ),
    "memory": (
        "brk",
        "madvise",
        "membarrier",
        "mincore",
        "mlock",
        "mlock2",
        "mlockall",
        "mmap",
        "mprotect",
        "mremap",
        "msync",
        "munlock",
        "munlockall",
        "munmap",
        "get_mempolicy",
        "set_mempolicy",
        "mbind",
        "pkey_alloc",
        "pkey_free",
        "pkey_mprotect",
        "remap_file_pages",
        "process_madvise",
        "memfd_secret",
    ),
    "processes": (
        "arch_prctl",
        "capget",
        "capset",
        "execve",
        "execveat",
        "exit",
        "exit_group",
        "fork",
        "vfork",
        "getegid",
        "geteuid",
        "getgid",
        "getgroups",
        "getpgid",
        "getpgrp",
        "getpid",
        "getppid",
        "getpriority",
        "getresgid",
        "getresuid",
        "getrlimit",
        "getrusage",
        "getsid",
        "gettid",
        "getuid",
        "ioprio_get",
        "ioprio_set",
        "kill",
        "pidfd_getfd",
        "pidfd_open",
        "pidfd_send_signal",
        "prctl",
        "prlimit64",
        "process_vm_readv",
        "process_vm_writev",
        "ptrace",
        "rseq",
        "sched_get_priority_max",
        "sched_get_priority_min",
        "sched_getaffinity",
        "sched_getattr",
        "sched_getparam",
        "sched_getscheduler",
        "sched_rr_get_interval",
        "sched_setaffinity",
        "sched_setattr",
        "sched_setparam",
        "sched_setscheduler",
        "sched_yield",
        "set_robust_list",
        "get_robust_list",
        "set_tid_address",
        "setfsgid",
        "setfsuid",
        "setgid",
        "setgroups",
        "setpgid",
        "setpriority",
        "setregid",
        "setresgid",
        "setresuid",
        "setreuid",
        "setrlimit",
        "setsid",
        "setuid",
        "tgkill",
        "tkill",
        "times",
        "wait4",
        "waitid",
        "uname",
        "sethostname",
        "setdomainname",
        "sysinfo",
        "getcpu",
        "kcmp",
        "landlock_add_rule",
        "landlock_create_ruleset",
        "landlock_restrict_self",
        "seccomp",
    ),
    "signals and waiting": (
        "alarm",
        "clock_getres",
        "clock_gettime",
        "clock_nanosleep",
        "epoll_create",
        "epoll_create1",
        "epoll_ctl",
        "epoll_pwait",
        "epoll_pwait2",
        "epoll_wait",
        "eventfd",
        "eventfd2",
        "futex",
        "futex_waitv",
        "getitimer",
        "gettimeofday",
        "nanosleep",
        "pause",
        "poll",
        "ppoll",
        "pselect6",
        "restart_syscall",
        "rt_sigaction",
        "rt_sigpending",
        "rt_sigprocmask",
        "rt_sigqueueinfo",
        "rt_sigreturn",
        "rt_sigsuspend",
        "rt_sigtimedwait",
        "rt_tgsigqueueinfo",
        "select",
        "setitimer",
        "sigaltstack",
        "signalfd",
        "signalfd4",
        "time",
        "timer_create",
        "timer_delete",
        "timer_getoverrun",
        "timer_gettime",
        "timer_settime",
        "timerfd_create",
        "timerfd_gettime",
        "timerfd_settime",
    ),
    "ipc": (
        "mq_getsetattr",
        "mq_notify",
        "mq_open",
        "mq_timedreceive",
        "mq_timedsend",
        "mq_unlink",
        "msgctl",
        "msgget",
        "msgrcv",
        "msgsnd",
        "semctl",
        "semget",
        "semop",
        "semtimedop",
        "shmat",
        "shmctl",
        "shmdt",
        "shmget",
        "pipe",
        "pipe2",
    ),
    "network": (
        "accept",
        "accept4",
        "bind",
        "connect",
        "getpeername",
        "getsockname",
        "getsockopt",
        "listen",
        "recvfrom",
        "recvmmsg",
        "recvmsg",
        "sendmmsg",
        "sendmsg",
        "sendto",
        "setsockopt",
        "shutdown",
        "socket",
        "socketpair",
    ),
    "terminals and devices": (
        "io_cancel",
        "io_destroy",
        "io_getevents",
        "io_pgetevents",
        "io_setup",
        "io_submit",
        "getrandom",
    ),
}
"""Allowed unconditionally, by purpose. Whether a call succeeds is still up to the kernel's
other checks (capabilities bounded as in docs/runtime.md, the user namespace, file modes):
``mknod`` is listed but fails without CAP_MKNOD, which no sandbox process can ever hold;
``socket`` is listed but raw sockets need CAP_NET_RAW, which is likewise never held."""

REFUSED: dict[str, tuple[tuple[str, ...], str]] = {
    "kernel modules": (
        ("init_module", "finit_module", "delete_module", "create_module", "query_module", "get_kernel_syms"),
        "loading code into the shared kernel is the end of every boundary",
    ),
    "kexec": (("kexec_load", "kexec_file_load"), "replaces the running kernel"),
    "bpf": (("bpf",), "eBPF programs run in the kernel; the verifier has a long record of escapes"),
    "perf": (("perf_event_open",), "exposes kernel addresses and other tenants' activity"),
    "userfaultfd": (("userfaultfd",), "lets an attacker stall the kernel mid-copy, a staple of exploits"),
    "kernel keyrings": (
        ("keyctl", "add_key", "request_key"),
        "keyrings are not namespaced: keys would leak between sandboxes and the host",
    ),
    "mounting": (
        (
            "mount",
            "umount",
            "umount2",
            "pivot_root",
            "fsopen",
            "fsconfig",
            "fsmount",
            "fspick",
            "move_mount",
            "open_tree",
            "mount_setattr",
        ),
        "a sandbox's filesystem layout is fixed by hostd; mounts are how container escapes begin",
    ),
    "new namespaces": (
        ("unshare", "setns"),
        "a new user namespace hands out a full capability set over new namespaces, the kernel "
        "attack surface that most container escapes go through; joining another namespace "
        "could leave the sandbox's",
    ),
    "clone3": (
        ("clone3",),
        "its flags are out of seccomp's sight (a pointer), so it could create namespaces; "
        "ENOSYS makes libc fall back to clone, which is checked",
    ),
    "reboot": (("reboot",), "the kernel is the host's"),
    "setting the clock": (
        ("settimeofday", "clock_settime", "clock_adjtime", "adjtimex", "stime"),
        "the clock is the host's (there is no time namespace for the real-time clock)",
    ),
    "swap": (("swapon", "swapoff"), "swap is the host's"),
    "process accounting": (("acct",), "writes host-wide accounting records"),
    "quotas": (("quotactl", "quotactl_fd"), "disk quotas are hostd's (the pool's qgroups)"),
    "file handles": (
        ("open_by_handle_at",),
        "opens any file of a filesystem by handle, around the sandbox's root (the Shocker escape)",
    ),
    "port I/O": (("iopl", "ioperm"), "direct hardware access"),
    "obsolete": (
        (
            "lookup_dcookie",
            "nfsservctl",
            "uselib",
            "vm86",
            "vm86old",
            "sysfs",
            "ustat",
            "_sysctl",
            "afs_syscall",
            "tuxcall",
            "security",
            "vserver",
            "getpmsg",
            "putpmsg",
        ),
        "unused by anything current; old code paths with old bugs",
    ),
    "io_uring": (
        ("io_uring_setup", "io_uring_enter", "io_uring_register"),
        "its operations bypass seccomp (they are not system calls) and it has been the source of "
        "many recent kernel privilege escalations; nothing in a sandbox needs it",
    ),
    "kernel log": (
        ("syslog",),
        "the kernel log holds host addresses and messages",
    ),
    "NUMA page migration": (
        ("migrate_pages", "move_pages"),
        "moves other processes' memory between nodes; a host-wide resource",
    ),
}
"""Deliberately absent from ``ALLOWED``: group → (calls, reason). The default action refuses
them; listing them keeps the decision visible and is checked by the tests."""

CONDITIONAL = {
    "clone": "allowed without namespace flags (threads, fork)",
    "clone3": "ENOSYS, so that libc falls back to clone",
    "ioctl": "all but btrfs' volume requests (a subvolume made by one is outside the disk quota)",
    "personality": "the Linux personas only",
}
"""The calls with a rule of their own (see the module doc)."""

ALLOW_WITH_NOTE = {
    "ptrace": "allowed: the PID namespace hides every process outside the sandbox, so only "
    "the sandbox's own can be traced (debuggers, strace)",
    "process_vm_readv": "allowed like ptrace, within the sandbox's PID namespace",
    "process_vm_writev": "allowed like ptrace, within the sandbox's PID namespace",
    "name_to_handle_at": "allowed: making a handle is harmless; opening one is refused",
    "sethostname": "allowed: the UTS namespace is the sandbox's own (and needs CAP_SYS_ADMIN, "
    "which no sandbox process holds)",
}


def profile() -> dict[str, Any]:
    """The ``linux.seccomp`` section of an OCI runtime spec (the x86-64 ABI only: see above)."""
    refused = {name for calls, _ in REFUSED.values() for name in calls}
    allowed = sorted({name for names in ALLOWED.values() for name in names})
    clash = refused & set(allowed)
    if clash:
        raise AssertionError(f"allowed and refused at once: {sorted(clash)}")
    return {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": EPERM,
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [
            {"names": allowed, "action": "SCMP_ACT_ALLOW"},
            {
                "names": ["clone"],
                "action": "SCMP_ACT_ALLOW",
                "args": [{"index": 0, "value": NAMESPACE_FLAGS, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}],
            },
            {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS},
            *_ioctl_rules(),
            *(
                {
                    "names": ["personality"],
                    "action": "SCMP_ACT_ALLOW",
                    "args": [{"index": 0, "value": persona, "op": "SCMP_CMP_EQ"}],
                }
                for persona in PERSONAS
            ),
        ],
    }


def _ioctl_rules() -> list[dict[str, Any]]:
    """Allow ``ioctl`` unless its request matches ``BTRFS_VOL_IOCTLS`` (see there)."""
    mask, refused = BTRFS_VOL_IOCTLS
    bits = [1 << i for i in range(32) if mask & (1 << i)]
    return [
        {
            "names": ["ioctl"],
            "action": "SCMP_ACT_ALLOW",
            "args": [{"index": 1, "value": bit, "valueTwo": ~refused & bit, "op": "SCMP_CMP_MASKED_EQ"}],
        }
        for bit in bits
    ]
