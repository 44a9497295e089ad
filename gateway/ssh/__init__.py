"""The SSH gateway: OpenSSH clients into sandboxes (docs/ssh.md).

A process of its own (``python -m gateway.ssh``), started by ``dnah up`` beside the HTTP
gateway. It speaks SSH (asyncssh) to clients and nothing but the core's ``/internal/ssh/*``
routes behind it: logins are checked there, and every session or tunnel is a WebSocket
that the core relays to hostd's terminal, process or port tunnel route.
"""
