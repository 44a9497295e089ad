"""The core's exception tree. ``core/http/common/errors.py`` renders each as ``{statusCode, message,
code}`` with its status — the only place a status code is chosen.

CoreError
├── BadRequest           400  invalid input the schema could not catch (ranges, names)
├── Unauthorized         401  no or unknown API key
├── Forbidden            403  a valid key without the needed role (admin routes only)
├── NotFound             404  no such object *in the caller's org* (never 403: no existence leak)
├── Conflict             409  the object's state does not allow the operation right now
│   ├── ResizeNeedsStop  409  CPU/memory of a started sandbox whose host cannot resize live
│   └── NotRunning       409  a preview request to a sandbox that is not started (and not woken)
├── PayloadTooLarge      413  an upload over the configured limit (nothing of it is stored)
├── SnapshotRejected     422  a snapshot failed verification (unsigned, tampered, unknown key)
├── NoCapacity           503  no ready host has room for the sandbox
├── HostUnavailable      502  the sandbox's host did not answer or failed the command
├── PortClosed           502  a preview request to a port nothing in the sandbox listens on
├── InsufficientStorage  507  the sandbox's disk is full
└── ExecTimeout          408  a command ran past its timeout (Daytona maps 408 to a timeout)
"""

from __future__ import annotations


class CoreError(Exception):
    status_code = 500
    code = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(CoreError):
    status_code = 400
    code = "bad_request"


class Unauthorized(CoreError):
    status_code = 401
    code = "unauthorized"


class Forbidden(CoreError):
    status_code = 403
    code = "forbidden"


class NotFound(CoreError):
    status_code = 404
    code = "not_found"


class Conflict(CoreError):
    status_code = 409
    code = "conflict"


class ResizeNeedsStop(Conflict):
    """The host's runtime cannot change a running sandbox's CPU or memory (its
    ``live_resize`` capability is false): the caller stops the sandbox, resizes, starts it."""

    code = "resize_needs_stop"


class NotRunning(Conflict):
    code = "sandbox_not_running"


class Gone(CoreError):
    status_code = 410
    code = "gone"


class PayloadTooLarge(CoreError):
    status_code = 413
    code = "payload_too_large"


class SnapshotRejected(CoreError):
    status_code = 422
    code = "snapshot_rejected"


class InsufficientStorage(CoreError):
    status_code = 507
    code = "insufficient_storage"


class NoCapacity(CoreError):
    status_code = 503
    code = "no_capacity"


class HostUnavailable(CoreError):
    status_code = 502
    code = "host_unavailable"

    def __init__(self, message: str, *, answered: bool = False) -> None:
        super().__init__(message)
        self.answered = answered
        """True when the host answered with an error (it did not do it); False when the
        outcome is unknown (no answer)."""


class PortClosed(CoreError):
    status_code = 502
    code = "port_closed"


class ExecTimeout(CoreError):
    status_code = 408
    code = "timeout"
