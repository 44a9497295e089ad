#!/bin/sh
# Boots one namespace sandbox. Spawned by hostd (hosts/runtime/_launch.py), never by hand.
#
#   ns-init.sh launch NETNS_PATH CGROUP_PROCS... -- SANDBOX_DIR LOWER GUEST_DIR RESOLV HOSTNAME CGROUPS -- AGENT_ARGV...
#
# Stage "launch" runs on the host: it moves itself into the sandbox's cgroups, so everything
# below is accounted and limited from its first instruction, then enters the sandbox's network
# namespace and creates the mount, UTS, IPC, PID and cgroup namespaces. `unshare --fork` stays
# behind as the sandbox's supervisor (the process hostd reaps) and re-runs this script as
# PID 1 of the new PID namespace, in stage "boot".
#
# Stage "boot" builds the root filesystem inside the new (private) mount namespace, so no
# sandbox mount is ever visible on the host and all of them vanish with the namespace. It then
# pivots into it, detaches the old root so no host path stays reachable, and execs
# AGENT_ARGV, which drops to the unprivileged user and starts the agent (still PID 1).
#
# CGROUPS is "cgroup2", or the space-separated option strings of the cgroup v1 hierarchies
# to show read-only at /sys/fs/cgroup (e.g. "cpu memory pids freezer"). Inside the cgroup
# namespace their root is the sandbox's own cgroup.
#
# The environment is hostd's fixed one (PATH only): the sandbox's environment is part of
# AGENT_ARGV and applied by `env -i` as the very last step, so nothing a user puts in it can
# influence the root-owned host commands here.
set -eu

stage=$1
shift

if [ "$stage" = launch ]; then
  netns=$1
  shift
  while [ "$1" != -- ]; do
    echo $$ > "$1"
    shift
  done
  shift
  exec nsenter --net="$netns" -- \
    unshare --mount --uts --ipc --pid --cgroup --fork --kill-child --propagation private -- \
    /bin/sh "$0" boot "$@"
fi

[ "$stage" = boot ] || { echo "ns-init.sh: unknown stage $stage" >&2; exit 2; }
sandbox=$1 lower=$2 guest=$3 resolv=$4 name=$5 cgroups=$6
shift 7  # the six above and the "--" before AGENT_ARGV
root=$sandbox/rootfs

mount -t overlay overlay -o "lowerdir=$lower,upperdir=$sandbox/upper,workdir=$sandbox/work" "$root"

mount -t proc -o nosuid,nodev,noexec proc "$root/proc"
mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$root/sys"
if [ "$cgroups" = cgroup2 ]; then
  mount -t cgroup2 -o ro,nosuid,nodev,noexec cgroup2 "$root/sys/fs/cgroup"
else
  mount -t tmpfs -o nosuid,nodev,noexec,mode=755,size=64k cgroup "$root/sys/fs/cgroup"
  cd "$root/sys/fs/cgroup"
  mkdir $cgroups  # unquoted on purpose: one directory per hierarchy
  for hierarchy in $cgroups; do
    mount -t cgroup -o "ro,nosuid,nodev,noexec,$hierarchy" cgroup "$hierarchy"
  done
  mount -o remount,ro,bind .
fi

# A fresh /dev with only harmless devices; a private devpts so the sandbox sees only its ptys.
mount -t tmpfs -o nosuid,noexec,mode=755,size=64k dev "$root/dev"
cd "$root/dev"
for node in null zero full random urandom tty; do
  : > "$node"
  mount --bind "/dev/$node" "$node"
done
mkdir pts shm
mount -t devpts -o newinstance,nosuid,noexec,gid=5,mode=620,ptmxmode=666 devpts pts
mount -t tmpfs -o nosuid,nodev,mode=1777 shm shm
ln -s pts/ptmx /proc/self/fd .
ln -s /proc/self/fd/0 stdin
ln -s /proc/self/fd/1 stdout
ln -s /proc/self/fd/2 stderr

# /opt/dnah belongs to the sandbox user, who could have replaced guest/ with a symlink on the
# disk; a fresh tmpfs there means the agent's code is always the host's read-only copy.
mount -t tmpfs -o nosuid,nodev,mode=755,size=16k dnah "$root/opt/dnah"
mkdir "$root/opt/dnah/guest"
mount --bind -o ro "$guest" "$root/opt/dnah/guest"
mount --bind "$sandbox/run" "$root/run/dnah"
mount --bind -o ro "$resolv" "$root/etc/resolv.conf"

echo "$name" > /proc/sys/kernel/hostname

cd "$root"
pivot_root . .
umount --lazy .
cd /
exec "$@"
