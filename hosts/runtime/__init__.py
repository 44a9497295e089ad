"""Runtime backends: how a host turns a SandboxSpec into a running, isolated sandbox."""
