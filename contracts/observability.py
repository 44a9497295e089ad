"""The log format every dnah process shares, and the request id that ties one call's lines
together across gateway → core → hostd.

Each service calls ``configure_logging(service)`` once at start-up. Lines are JSON when stderr
is not a TTY (and always when ``DNAH_LOG_FORMAT=json``), human-readable otherwise. A request
id, taken from the ``x-request-id`` header or minted by the first hop, is bound with
``bind_request_id`` for the duration of a request, and forwarded on every outgoing call.
"""

from __future__ import annotations

import logging
import os
import sys
import uuid

import structlog

from contracts.control import REQUEST_ID_HEADER

__all__ = ["REQUEST_ID_HEADER", "bind_request_id", "configure_logging", "new_request_id"]


def configure_logging(service: str, *, fmt: str | None = None, level: str = "info") -> None:
    """Set up structlog for this process; ``fmt`` is ``json``, ``console`` or None (auto)."""
    fmt = fmt or os.environ.get("DNAH_LOG_FORMAT") or ("console" if sys.stderr.isatty() else "json")
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        # One write() per line (message and newline together): processes and threads that
        # share a log file (Granian's main process and worker, hostd's helpers) then never
        # splice two lines into one, as print()'s separate newline write can.
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.bind_contextvars(service=service)


def new_request_id() -> str:
    return uuid.uuid4().hex


def bind_request_id(request_id: str | None) -> str:
    """Bind (and return) the request id for log lines emitted while handling this request."""
    rid = request_id if request_id and len(request_id) <= 128 else new_request_id()
    structlog.contextvars.bind_contextvars(request_id=rid)
    return rid
