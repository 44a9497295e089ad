"""hostd's exception tree. The HTTP front end (``hosts/app.py``) maps each to a status once.

HostError
├── InvalidRequest         400  a command's values make no sense (a malformed key, a shrink)
├── SandboxNotFound        404  no such sandbox on this host
├── SandboxConflict        409  the sandbox is not in a state that allows the command
├── TemplateNotFound       404  the host has no such template
├── AgentUnavailable       502  the in-sandbox agent did not answer (dead sandbox, not booted)
├── AgentError             502  the agent answered with an error frame
├── AgentIncompatible      409  the agent speaks another guest protocol version (an image
│                               older or newer than this hostd); only the ping reached it
├── RuntimeFailure         500  a runtime step (mount, cgroup, netns, spawn) failed
│   └── SnapshotInvalid    422  a snapshot or archive fails verification (unsigned, unknown
│                               key, bad signature, a hash that does not match)
└── SnapshotNotFound       404  no such snapshot (or archive) on this host
"""

from __future__ import annotations


class HostError(Exception):
    status_code = 500
    code = "host_error"


class InvalidRequest(HostError):
    status_code = 400
    code = "bad_request"


class SandboxNotFound(HostError):
    status_code = 404
    code = "sandbox_not_found"


class SandboxConflict(HostError):
    status_code = 409
    code = "sandbox_conflict"


class TemplateNotFound(HostError):
    status_code = 404
    code = "template_not_found"


class AgentUnavailable(HostError):
    status_code = 502
    code = "agent_unavailable"


class AgentError(HostError):
    status_code = 502
    code = "agent_error"

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.agent_code = code


class AgentIncompatible(HostError):
    """The agent answered the connection's ping with another protocol version, or none.

    409, not 502: the agent is up and answered; it is this sandbox's image that does not fit
    this hostd, so retrying cannot help. Nothing but the ping reached the agent and a boot or
    restore that meets it is undone, which is what a 4xx tells the core (it puts the sandbox
    back). docs/runtimes.md, "Guest protocol versions".
    """

    status_code = 409
    code = "agent_incompatible"

    def __init__(self, agent_version: int | None, host_version: int, agent: str) -> None:
        if agent_version is None:
            spoken, origin = "no protocol version", "predates this hostd (an agent older than the check)"
        else:
            spoken = f"guest protocol {agent_version}"
            origin = "predates this hostd" if agent_version < host_version else "comes from a newer hostd"
        super().__init__(
            f"the sandbox's agent ({agent or 'unnamed'}) speaks {spoken} and this hostd speaks guest "
            f"protocol {host_version}: the sandbox's image {origin}. Restore it on a hostd of its "
            "protocol, or recreate the sandbox"
        )
        self.agent_version = agent_version
        self.host_version = host_version


class RuntimeFailure(HostError):
    status_code = 500
    code = "runtime_failure"


class SnapshotInvalid(RuntimeFailure):
    """The snapshot must not be trusted; nothing was touched. A ``RuntimeFailure`` so runtime
    code that checks snapshots keeps one error type, with a status of its own."""

    status_code = 422
    code = "snapshot_rejected"


class SnapshotNotFound(HostError):
    status_code = 404
    code = "snapshot_not_found"
