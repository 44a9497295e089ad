"""Contexts: a Jupyter kernel each, so variables, imports and functions survive between calls.

A context is one kernel process (``jupyter_client.KernelManager``) with one blocking client.
Executions in a context run one at a time (a lock: the kernel itself is sequential, and the
client's iopub channel must be read by one caller); contexts run side by side.

``execute`` forwards the cell's iopub messages as E2B events (``events``) to a ``Sink``
until the kernel reports the cell idle. A sink that goes away mid-cell (the SDK's
``timeout`` elapsed and it closed the connection) gets the kernel interrupted, so the context
is free again for the next call; the cell's remaining output is drained, not sent. Per-call
``env_vars`` are set in the kernel's ``os.environ`` just before the cell and put back right
after it, by silent executions (not in the history, no execution count).
"""

from __future__ import annotations

import json
import os
import queue
import threading
import uuid
from collections.abc import Mapping
from typing import Any, Protocol

from jupyter_client.manager import KernelManager

from guest.code_interpreter import events

LANGUAGES = {"python": "python3"}
"""Context language → kernel name. Only Python has a kernel in the template."""
POLL_S = 0.25
"""How often an execution waiting for output checks that its client and kernel are there."""
READY_TIMEOUT_S = 60.0
"""How long a starting kernel may take to answer (a loaded 2-core machine: seconds)."""
_SET_ENV = """\
def _dnah_set_env(new):
    import os
    saved = {k: os.environ.get(k) for k in new}
    os.environ.update(new)
    return saved
_dnah_saved_env = _dnah_set_env(__import__("json").loads(PAYLOAD))
del _dnah_set_env
"""
_RESTORE_ENV = """\
def _dnah_restore_env(saved):
    import os
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
_dnah_restore_env(_dnah_saved_env)
del _dnah_restore_env, _dnah_saved_env
"""


class ContextError(Exception):
    """A request the contexts cannot serve; ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Sink(Protocol):
    """Where an execution's events go."""

    def send(self, event: dict[str, Any]) -> bool:
        """Deliver one event; False when the client is gone."""

    def gone(self) -> bool:
        """True once the client has closed the connection."""


class Context:
    """One kernel and its client."""

    def __init__(self, context_id: str, language: str, cwd: str, env: Mapping[str, str]) -> None:
        self.id = context_id
        self.language = language
        self.cwd = cwd
        self._env = dict(env)
        self._manager = KernelManager(kernel_name=LANGUAGES[language])
        self._client: Any = None
        self._lock = threading.Lock()

    def describe(self) -> dict[str, str]:
        """The context as E2B's SDK reads it (``Context.from_json``)."""
        return {"id": self.id, "language": self.language, "cwd": self.cwd}

    def start(self) -> None:
        """Start the kernel and wait until it answers."""
        self._manager.start_kernel(cwd=self.cwd, env=self._env)
        self._connect()

    def _connect(self) -> None:
        client = self._manager.client()
        client.start_channels()
        try:
            client.wait_for_ready(timeout=READY_TIMEOUT_S)
        except RuntimeError as exc:
            client.stop_channels()
            raise ContextError(500, f"the {self.language} kernel did not start: {exc}") from exc
        self._client = client

    def restart(self) -> None:
        """A fresh kernel in the same context: every variable is gone."""
        with self._lock:
            self._restart()

    def _restart(self) -> None:
        if self._client is not None:
            self._client.stop_channels()
            self._client = None
        self._manager.restart_kernel(now=True)
        self._connect()

    def shutdown(self) -> None:
        if self._client is not None:
            self._client.stop_channels()
        if self._manager.has_kernel:
            self._manager.shutdown_kernel(now=True)

    def execute(self, code: str, env_vars: Mapping[str, str] | None, sink: Sink) -> None:
        """Run ``code``, sending its events to ``sink``; the last is ``end_of_execution``
        unless the client went away or the kernel died."""
        with self._lock:
            if not self._manager.is_alive():
                self._restart()  # it died in an earlier call; its state is gone either way
            if env_vars:
                self._silent(_SET_ENV.replace("PAYLOAD", repr(json.dumps(dict(env_vars)))))
            try:
                self._run(code, sink)
            finally:
                if env_vars and self._manager.is_alive():
                    self._silent(_RESTORE_ENV)

    def _run(self, code: str, sink: Sink) -> None:
        # stop_on_error=False: a context runs one cell at a time, so nothing is queued behind
        # a failing cell for the kernel to abort; with True, ipykernel also aborts a request
        # that arrives just after the error (the next cell after an interrupted one came back
        # "aborted", without its result, about once a CI run under load)
        msg_id = self._client.execute(code, store_history=True, allow_stdin=False, stop_on_error=False)
        count: int | None = None
        listening = True
        while True:
            try:
                msg = self._client.get_iopub_msg(timeout=POLL_S)
            except queue.Empty:
                if listening and sink.gone():
                    listening = False
                    self._manager.interrupt_kernel()
                if not self._manager.is_alive():
                    if listening:
                        sink.send(events.error("KernelDied", "the kernel exited while running the code"))
                    return
                continue
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue  # left over from an earlier, interrupted cell
            kind = msg["header"]["msg_type"]
            if kind == "execute_input":
                count = msg["content"].get("execution_count")
            elif kind == "status" and msg["content"].get("execution_state") == "idle":
                break
            event = events.from_message(msg)
            if event is not None and listening and not sink.send(event):
                listening = False
                self._manager.interrupt_kernel()
        if listening:
            if count is not None:
                sink.send(events.number_of_executions(count))
            sink.send(events.end_of_execution())

    def _silent(self, code: str) -> None:
        """Run plumbing code: no history, no output kept; waits for the kernel to be idle."""
        msg_id = self._client.execute(code, silent=True, store_history=False, allow_stdin=False)
        while self._manager.is_alive():
            try:
                msg = self._client.get_iopub_msg(timeout=POLL_S)
            except queue.Empty:
                continue
            if (
                msg.get("parent_header", {}).get("msg_id") == msg_id
                and msg["header"]["msg_type"] == "status"
                and msg["content"].get("execution_state") == "idle"
            ):
                return


class Contexts:
    """Every context of the sandbox, and the default Python one that calls without a context
    use (made at start, and again if it was removed)."""

    def __init__(self, default_cwd: str, env: Mapping[str, str]) -> None:
        self._default_cwd = default_cwd
        self._env = dict(env)
        self._contexts: dict[str, Context] = {}
        self._default: Context | None = None
        self._lock = threading.Lock()
        self._default_lock = threading.Lock()

    def create(self, language: str | None, cwd: str | None) -> Context:
        """A new context with a kernel that has answered.

        Raises:
            ContextError: 400 for a language without a kernel or a cwd that is not a directory.
        """
        lang = _language(language)
        directory = cwd or self._default_cwd
        if not os.path.isdir(directory):
            raise ContextError(400, f"cwd {directory!r} is not a directory in the sandbox")
        context = Context(str(uuid.uuid4()), lang, directory, self._env)
        try:
            context.start()
        except BaseException:
            context.shutdown()
            raise
        with self._lock:
            self._contexts[context.id] = context
        return context

    def default(self, language: str | None) -> Context:
        """The default context of ``language`` (only Python has one), started if needed."""
        _language(language)
        with self._default_lock:
            with self._lock:
                current = self._default
                if current is not None and current.id in self._contexts:
                    return current
            self._default = self.create("python", None)
            return self._default

    def get(self, context_id: str) -> Context:
        with self._lock:
            context = self._contexts.get(context_id)
        if context is None:
            raise ContextError(404, f"context {context_id} not found")
        return context

    def list(self) -> list[Context]:
        with self._lock:
            return list(self._contexts.values())

    def remove(self, context_id: str) -> None:
        with self._lock:
            context = self._contexts.pop(context_id, None)
        if context is None:
            raise ContextError(404, f"context {context_id} not found")
        context.shutdown()

    def close_all(self) -> None:
        with self._lock:
            contexts, self._contexts = list(self._contexts.values()), {}
        for context in contexts:
            context.shutdown()


def _language(language: str | None) -> str:
    lang = (language or "python").lower()
    if lang not in LANGUAGES:
        served = ", ".join(sorted(LANGUAGES))
        raise ContextError(400, f"language {language!r} is not available in this sandbox (served: {served})")
    return lang
