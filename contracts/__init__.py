"""The agreements between the parts of dnah: one wire module per hop, imported by both ends.

- ``public``  — clients ↔ gateway/core: the native ``/v1`` and Daytona request/response shapes.
- ``control`` — gateway ↔ core: the headers the edge adds when it forwards.
- ``host``    — core ↔ hostd: host registration, heartbeats and sandbox commands.
- ``guest``   — hostd ↔ in-sandbox agent: the framed protocol on the agent channel.

This package imports nothing else from the repository.
"""
