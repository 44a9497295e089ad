"""Field types every hop shares: what a string or a number may be before anyone acts on it.

Declared once here and used in the wire types (``public``, ``host``, ``guest``), so msgspec
refuses a bad value while decoding — a 400 at the core, a 400 at hostd — instead of Postgres
(``invalid byte sequence``, ``integer out of range``) or ``execve`` (``embedded null byte``)
refusing it later as a 500 or a 502. The rules and the reasons are listed in
docs/reliability.md, "Bad input".

- ``Text``: no NUL character. Every string that ends up in Postgres ``text``/``jsonb``, in an
  argv, an environment or a path is one (Postgres cannot store U+0000 and the kernel ends a C
  string there, so such a value can only ever fail or mean something else).
- ``Int32`` and the bounded integers: every number fits the ``integer`` column or the C
  ``int`` it becomes, and has the range its meaning allows.
- Caps on the things a client could make huge: labels (count and sizes, they are in every
  listing), environments, argvs (the kernel's 128 KiB per argument or variable, and the 1 MiB
  this API allows for a command line and its environment together).
"""

from __future__ import annotations

from typing import Annotated, TypeVar

import msgspec

_S = TypeVar("_S", bound=msgspec.Struct)

NO_NUL = r"^[^\x00]*$"
"""The pattern of ``Text``: anything but U+0000. (``$`` may match before a final newline,
but ``[^\\x00]*`` takes newlines too, so the whole string is checked.)"""

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1

Text = Annotated[str, msgspec.Meta(pattern=NO_NUL)]
"""A string without NUL."""
Int32 = Annotated[int, msgspec.Meta(ge=INT32_MIN, le=INT32_MAX)]
"""Any integer Postgres' ``integer`` holds."""
Positive = Annotated[int, msgspec.Meta(ge=1, le=INT32_MAX)]
"""A size or count that must be at least 1 (CPUs, MiB, GiB, depth)."""
NonNegative = Annotated[int, msgspec.Meta(ge=0, le=INT32_MAX)]
"""A duration or count where 0 means none or never."""

TIMEOUT_MAX_MS = 86_400_000
"""The longest timeout any hop takes: a day (the public API allows an hour)."""
TimeoutMs = Annotated[int, msgspec.Meta(ge=0, le=TIMEOUT_MAX_MS)]
"""A timeout in milliseconds between hops; 0 where a request says it means none."""
DeadlineMs = Annotated[int, msgspec.Meta(ge=1, le=TIMEOUT_MAX_MS)]
"""A command's deadline in milliseconds, where there is always one (``exec``, ``code.run``)."""

NAME_MAX = 256
"""Longest id or name a client may choose (sessions, branches, remotes, snapshots)."""
Name = Annotated[str, msgspec.Meta(pattern=NO_NUL, max_length=NAME_MAX)]
PATH_MAX = 4096
"""Linux's ``PATH_MAX``: a longer path cannot be opened anyway."""
Path = Annotated[str, msgspec.Meta(pattern=NO_NUL, max_length=PATH_MAX)]
URL_MAX = 8192
Url = Annotated[str, msgspec.Meta(pattern=NO_NUL, max_length=URL_MAX)]
SECRET_MAX = 8192
Secret = Annotated[str, msgspec.Meta(pattern=NO_NUL, max_length=SECRET_MAX)]
"""A credential handed to one process in its environment (git's username and password)."""

MAX_LABELS = 64
LABEL_KEY_MAX = 256
LABEL_VALUE_MAX = 4096
LabelKey = Annotated[str, msgspec.Meta(pattern=NO_NUL, min_length=1, max_length=LABEL_KEY_MAX)]
LabelValue = Annotated[str, msgspec.Meta(pattern=NO_NUL, max_length=LABEL_VALUE_MAX)]
LabelMap = Annotated[dict[LabelKey, LabelValue], msgspec.Meta(max_length=MAX_LABELS)]
"""A sandbox's labels: at most 64, keys 1-256 characters, values up to 4096."""

MAX_ENV = 1024
ENV_KEY_MAX = 1024
ARG_MAX_BYTES = 128 * 1024 - 1
"""Longest single argument or ``NAME=value`` in UTF-8 bytes: the kernel's ``MAX_ARG_STRLEN``
(128 KiB) counts the terminating NUL. The types cap characters at this many (a character is
at least a byte); ``check_command_size`` counts the bytes."""
EnvKey = Annotated[str, msgspec.Meta(pattern=NO_NUL, min_length=1, max_length=ENV_KEY_MAX)]
EnvValue = Annotated[str, msgspec.Meta(pattern=NO_NUL, max_length=ARG_MAX_BYTES)]
EnvMap = Annotated[dict[EnvKey, EnvValue], msgspec.Meta(max_length=MAX_ENV)]
"""Environment variables: at most 1024, names 1-1024 characters, ``NAME=value`` 128 KiB."""

MAX_ARGV = 10_000
Arg = Annotated[str, msgspec.Meta(pattern=NO_NUL, max_length=ARG_MAX_BYTES)]
Argv = Annotated[list[Arg], msgspec.Meta(max_length=MAX_ARGV)]
"""An argument vector: at most 10,000 arguments of up to 128 KiB each."""

COMMAND_MAX_BYTES = 1024 * 1024
"""What a command line and its environment may take together, in UTF-8 bytes: half of the
2 MiB a sandbox's kernel allows (``ARG_MAX``), the agent's own environment being the rest."""


def check_command_size(argv: list[str], env: dict[str, str] | None) -> None:
    """Refuse (``ValueError``, which msgspec reports as a validation error of the body) an argv
    and environment the kernel could not pass to ``execve`` (``E2BIG``). Called from the
    ``__post_init__`` of every request that runs a command, so the check is part of decoding it."""
    sizes = [len(a.encode()) for a in argv]
    if env:
        sizes += [len(k.encode()) + 1 + len(v.encode()) for k, v in env.items()]
    longest = max(sizes, default=0)
    if longest > ARG_MAX_BYTES:
        raise ValueError(f"an argument or variable takes {longest} bytes; at most {ARG_MAX_BYTES} fit")
    total = sum(sizes) + len(sizes)
    if total > COMMAND_MAX_BYTES:
        raise ValueError(
            f"the command and its environment take {total} bytes; at most {COMMAND_MAX_BYTES} are allowed"
        )


def checked(message: _S) -> _S:
    """``message`` put through its own type's constraints, which constructing a Struct in
    code does not apply: for a request built from something other than a decoded body (a
    query string), before it is acted on. Raises ``msgspec.ValidationError``."""
    return msgspec.convert(msgspec.to_builtins(message), type(message))
