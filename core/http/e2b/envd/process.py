"""envd's ``process.Process`` Connect service over ``ProcessService`` (the agent's registry).

- ``Start`` streams ``start{pid}``, ``data{stdout|stderr|pty}`` (base64), keepalives and
  ``end{exitCode, exited, status}``. ``Connect-Timeout-Ms`` is also the process's timeout: the
  agent kills it then, and the stream ends ``deadline_exceeded``. Leaving the stream only
  detaches (background commands run on); ``Connect`` re-attaches by pid or tag and replays
  the output kept since the start.
- ``List`` lists running processes; ``SendSignal`` (SIGTERM, SIGKILL) signals the process's
  whole session; ``SendInput``/``StreamInput`` write stdin or the terminal; ``CloseStdin``;
  ``Update`` resizes the terminal.
- A process killed by signal N ends with ``exitCode`` -1, ``exited`` false and Go's
  ``status`` (``signal: killed``), as envd reports it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import msgspec

from core.errors import Conflict
from core.http.e2b.envd import connect
from core.http.e2b.envd.context import Envd
from core.services.processes import Exited, Output, ProcessStream
from guard.reply import Receive, Scope, Send

_SIGNALS = {"SIGNAL_SIGTERM": 15, "SIGNAL_SIGKILL": 9}
_SIGNAL_STATUS = {1: "hangup", 2: "interrupt", 9: "killed", 15: "terminated", 13: "broken pipe"}


class _Camel(msgspec.Struct, rename="camel", omit_defaults=True):
    pass


class Selector(_Camel):
    pid: int | None = None
    tag: str | None = None


class ProcessConfig(_Camel):
    cmd: str = ""
    args: list[str] = []
    envs: dict[str, str] = {}
    cwd: str | None = None


class Size(_Camel):
    cols: int = 0
    rows: int = 0


class Pty(_Camel):
    size: Size | None = None


class StartRequest(_Camel):
    process: ProcessConfig | None = None
    pty: Pty | None = None
    tag: str | None = None
    stdin: bool | None = None


class ConnectRequest(_Camel):
    process: Selector | None = None


class SignalRequest(_Camel):
    process: Selector | None = None
    signal: str | int = 0


class ProcessInput(_Camel):
    stdin: bytes | None = None
    pty: bytes | None = None


class InputRequest(_Camel):
    process: Selector | None = None
    input: ProcessInput | None = None


class UpdateRequest(_Camel):
    process: Selector | None = None
    pty: Pty | None = None


class StreamInputData(_Camel):
    input: ProcessInput | None = None


class StreamInputStart(_Camel):
    process: Selector | None = None


class StreamInputRequest(_Camel):
    start: StreamInputStart | None = None
    data: StreamInputData | None = None
    keepalive: dict[str, str] | None = None


class Empty(_Camel):
    pass


class StartEvent(_Camel):
    pid: int


class DataEvent(_Camel):
    stdout: bytes | None = None
    stderr: bytes | None = None
    pty: bytes | None = None


class EndEvent(_Camel):
    exit_code: int
    exited: bool
    status: str
    error: str | None = None


class ProcessEvent(_Camel):
    start: StartEvent | None = None
    data: DataEvent | None = None
    end: EndEvent | None = None
    keepalive: Empty | None = None


class EventResponse(_Camel):
    event: ProcessEvent


class ProcessInfo(_Camel):
    config: ProcessConfig
    pid: int
    tag: str | None = None


class ListResponse(_Camel):
    processes: list[ProcessInfo]


def _keepalive() -> EventResponse:
    return EventResponse(event=ProcessEvent(keepalive=Empty()))


def _selector(selector: Selector | None) -> tuple[int | None, str | None]:
    if selector is None or (selector.pid is None and not selector.tag):
        raise connect.RpcError("invalid_argument", "process must name a pid or a tag")
    return selector.pid, selector.tag if selector.pid is None else None


@contextlib.contextmanager
def _precondition() -> Iterator[None]:
    """A process that has ended, has no stdin or no terminal: ``failed_precondition`` (not
    ``already_exists``, the other conflicts' code)."""
    try:
        yield
    except Conflict as exc:
        raise connect.RpcError("failed_precondition", exc.message) from None


def _end(exited: Exited) -> EndEvent:
    if exited.exit_code >= 0:
        return EndEvent(exit_code=exited.exit_code, exited=True, status=f"exit status {exited.exit_code}")
    signal = -exited.exit_code
    return EndEvent(
        exit_code=-1, exited=False, status=f"signal: {_SIGNAL_STATUS.get(signal, f'signal {signal}')}"
    )


def _data(output: Output) -> DataEvent:
    if output.stream == "stdout":
        return DataEvent(stdout=output.data)
    if output.stream == "stderr":
        return DataEvent(stderr=output.data)
    return DataEvent(pty=output.data)


async def _events(opened: Callable[[], Awaitable[ProcessStream]]) -> AsyncIterator[EventResponse]:
    """The process's events as envd's; a timeout the agent enforced is ``deadline_exceeded``."""
    stream = await opened()
    try:
        yield EventResponse(event=ProcessEvent(start=StartEvent(pid=stream.pid)))
        async for event in stream.events():
            if isinstance(event, Output):
                yield EventResponse(event=ProcessEvent(data=_data(event)))
            elif event.timed_out:
                raise connect.RpcError("deadline_exceeded", "the command ran past its timeout and was killed")
            else:
                yield EventResponse(event=ProcessEvent(end=_end(event)))
    finally:
        await stream.close()  # detach: the process runs on if it has not ended


async def _open_start(envd: Envd, body: bytes) -> ProcessStream:
    req = connect.decode(connect.single_envelope(body), StartRequest)
    config = req.process
    if config is None or not config.cmd:
        raise connect.RpcError("invalid_argument", "process.cmd is required")
    pty = None
    if req.pty is not None:
        size = req.pty.size or Size()
        pty = (size.cols or 80, size.rows or 24)
    deadline = connect.deadline_s(envd.headers)
    try:
        user = envd.user
    except ValueError as exc:
        raise connect.RpcError("invalid_argument", str(exc)) from None
    return await envd.processes.start(
        envd.org_id,
        envd.sandbox_id,
        [config.cmd, *config.args],
        env=config.envs,
        cwd=config.cwd or None,
        tag=req.tag or None,
        pty=pty,
        stdin=req.stdin is not False,
        timeout_ms=int(deadline * 1000) if deadline else None,
        user=user,
    )


async def _open_connect(envd: Envd, body: bytes) -> ProcessStream:
    req = connect.decode(connect.single_envelope(body), ConnectRequest)
    pid, tag = _selector(req.process)
    return await envd.processes.connect(envd.org_id, envd.sandbox_id, pid=pid, tag=tag)


def _server_stream(
    opener: Callable[[Envd, bytes], Awaitable[ProcessStream]],
) -> Callable[[Envd, Scope, Receive, Send], Awaitable[None]]:
    async def serve(envd: Envd, scope: Scope, receive: Receive, send: Send) -> None:
        body = await _request_body(receive, send)
        if body is not None:
            messages = _events(lambda: opener(envd, body))
            await connect.serve_stream(receive, send, envd.headers, messages, keepalive=_keepalive)

    return serve


async def _request_body(receive: Receive, send: Send) -> bytes | None:
    """A server stream's request body; a failure is answered here (None)."""
    try:
        return await connect.read_unary(receive)
    except ConnectionError:
        return None
    except connect.RpcError as exc:
        await connect.serve_stream(receive, send, {}, _raise(exc))
        return None


async def _raise(exc: connect.RpcError) -> AsyncIterator[EventResponse]:
    raise exc
    yield  # pragma: no cover - makes this a generator


async def _list(envd: Envd, body: bytes) -> ListResponse:
    processes = await envd.processes.list(envd.org_id, envd.sandbox_id)
    return ListResponse(
        processes=[
            ProcessInfo(
                config=ProcessConfig(cmd=p.argv[0], args=p.argv[1:], envs=p.env, cwd=p.cwd),
                pid=p.pid,
                tag=p.tag,
            )
            for p in processes
            if p.running
        ]
    )


async def _send_signal(envd: Envd, body: bytes) -> Empty:
    req = connect.decode(body, SignalRequest)
    pid, tag = _selector(req.process)
    signal = _SIGNALS.get(req.signal) if isinstance(req.signal, str) else req.signal
    if signal not in (9, 15):
        raise connect.RpcError("invalid_argument", "signal must be SIGNAL_SIGTERM or SIGNAL_SIGKILL")
    try:
        await envd.processes.signal(envd.org_id, envd.sandbox_id, signal, pid=pid, tag=tag)
    except Conflict as exc:  # it has ended: envd no longer knows it (the SDK's kill() is False)
        raise connect.RpcError("not_found", exc.message) from None
    return Empty()


async def _write_input(envd: Envd, selector: Selector | None, given: ProcessInput | None) -> None:
    pid, tag = _selector(selector)
    if given is None:
        raise connect.RpcError("invalid_argument", "input must carry stdin or pty")
    data = given.stdin if given.stdin is not None else given.pty
    if data:
        with _precondition():
            await envd.processes.send_input(envd.org_id, envd.sandbox_id, data, pid=pid, tag=tag)


async def _send_input(envd: Envd, body: bytes) -> Empty:
    req = connect.decode(body, InputRequest)
    await _write_input(envd, req.process, req.input)
    return Empty()


async def _close_stdin(envd: Envd, body: bytes) -> Empty:
    pid, tag = _selector(connect.decode(body, ConnectRequest).process)
    with _precondition():
        await envd.processes.close_stdin(envd.org_id, envd.sandbox_id, pid=pid, tag=tag)
    return Empty()


async def _update(envd: Envd, body: bytes) -> Empty:
    req = connect.decode(body, UpdateRequest)
    pid, tag = _selector(req.process)
    if req.pty is not None and req.pty.size is not None:
        size = req.pty.size
        if not (size.cols and size.rows):
            raise connect.RpcError("invalid_argument", "pty.size needs cols and rows")
        with _precondition():
            await envd.processes.resize(envd.org_id, envd.sandbox_id, size.cols, size.rows, pid=pid, tag=tag)
    return Empty()


async def _stream_input(envd: Envd, scope: Scope, receive: Receive, send: Send) -> None:
    """A client stream: ``start{process}``, then ``data{input}`` and keepalives; answered,
    once the client ends it, with one empty message and the end of the stream."""

    async def consume() -> AsyncIterator[Empty]:
        selector: Selector | None = None
        async for payload in connect.envelopes(receive):
            message = connect.decode(payload, StreamInputRequest)
            if message.start is not None:
                selector = message.start.process
                _selector(selector)
            elif message.data is not None:
                if selector is None:
                    raise connect.RpcError("invalid_argument", "the stream must begin with start")
                await _write_input(envd, selector, message.data.input)
        yield Empty()

    await connect.serve_client_stream(send, envd.headers, consume())


def _unary(handler: Callable[[Envd, bytes], Awaitable[msgspec.Struct]]) -> Callable[..., Awaitable[None]]:
    async def serve(envd: Envd, scope: Scope, receive: Receive, send: Send) -> None:
        await connect.serve_unary(receive, send, envd.headers, lambda body: handler(envd, body))

    return serve


PROCESS_RPCS: dict[str, Callable[[Envd, Scope, Receive, Send], Awaitable[None]]] = {
    "process.Process/Start": _server_stream(_open_start),
    "process.Process/Connect": _server_stream(_open_connect),
    "process.Process/StreamInput": _stream_input,
    "process.Process/List": _unary(_list),
    "process.Process/SendSignal": _unary(_send_signal),
    "process.Process/SendInput": _unary(_send_input),
    "process.Process/CloseStdin": _unary(_close_stdin),
    "process.Process/Update": _unary(_update),
}
"""The calls this module serves, by ``<service>/<method>``."""
