"""The host daemon (hostd): one per machine; runs sandboxes through a runtime backend."""
