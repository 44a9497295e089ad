"""The official Daytona SDK's SSH access API, unmodified, against one sandbox; prints a JSON
report. Run by ``test_daytona_ssh.py`` with the SDK's own virtualenv (``DAYTONA_API_URL`` and
``DAYTONA_API_KEY`` only, nothing of the project imported). Covers ``create_ssh_access``,
``validate_ssh_access`` and ``revoke_ssh_access``; the sandbox and one live token are left
for the test, which logs in with the printed ``sshCommand`` and deletes the sandbox."""

from __future__ import annotations

import json
import sys

from daytona import Daytona


def main() -> int:
    daytona = Daytona()
    sandbox = daytona.create()
    dropped = sandbox.create_ssh_access()
    valid = sandbox.validate_ssh_access(dropped.token)
    # SDK 0.226.1 passes the token positionally into the client's organization-id slot, so
    # no ?token= is sent and the server revokes every token of the sandbox (Daytona's rule)
    sandbox.revoke_ssh_access(dropped.token)
    after = sandbox.validate_ssh_access(dropped.token)
    kept = sandbox.create_ssh_access(expires_in_minutes=5)
    report = {
        "sandbox_id": sandbox.id,
        "kept": {"sandbox_id": kept.sandbox_id, "token": kept.token, "ssh_command": kept.ssh_command},
        "default_minutes": round((dropped.expires_at - dropped.created_at).total_seconds() / 60),
        "valid_before": [valid.valid, valid.sandbox_id],
        "valid_after": after.valid,
    }
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
