"""The toolbox: typed operations inside a sandbox, one service per area (files, git,
sessions, terminals, code). Each method takes plain parameters and answers with a
``contracts.guest`` result struct (or nothing), so the HTTP adapters of every API shape
(native, Daytona, E2B) translate shapes only and never build a guest wire message.

Every service relays through ``SandboxService.ask``: the sandbox is checked (org-scoped,
started, else 404/409), the call counts as activity where the area says so, and an agent
``error`` becomes the matching core error.
"""
