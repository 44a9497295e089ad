"""The fake runtime backend: plain processes and directories, no isolation, for tests only
(see ``runtime.py``)."""

from hosts.runtime.fake.runtime import FakeConfig, FakeRuntime

__all__ = ["FakeConfig", "FakeRuntime"]
