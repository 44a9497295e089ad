"""The OCI backend: each sandbox is a runc container in a user namespace, on a btrfs disk.

``runtime`` is the backend (``OciRuntime``); ``bundle`` writes a sandbox's OCI spec,
``seccomp`` holds its system-call filter, ``runc`` runs the runc binary and ``_host`` does
the little runc cannot do here. See docs/runtime.md ("OCI runtime").
"""

from hosts.runtime.oci.runtime import OciConfig, OciRuntime

__all__ = ["OciConfig", "OciRuntime"]
