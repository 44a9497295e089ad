"""SDK 0.226.1, unmodified: the network fields of ``Daytona.create`` and
``Sandbox.update_network_settings``; prints a JSON report. Run by ``test_daytona_network.py``
in the SDK's own virtualenv, configured with ``DAYTONA_API_URL`` and ``DAYTONA_API_KEY`` only,
importing nothing of the project.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from daytona import CreateSandboxFromSnapshotParams, Daytona, Sandbox


def fields(sandbox: Sandbox) -> list[Any]:
    return [sandbox.network_block_all, sandbox.network_allow_list, sandbox.domain_allow_list]


def main() -> int:
    report: dict[str, Any] = {}
    daytona = Daytona()
    blocked = daytona.create(CreateSandboxFromSnapshotParams(network_block_all=True))
    listed = daytona.create(
        CreateSandboxFromSnapshotParams(
            network_allow_list="198.18.0.0/15,192.0.2.0/24", domain_allow_list="PyPI.org"
        )
    )
    try:
        report["created"] = [fields(blocked), fields(listed)]
        report["read"] = fields(daytona.get(listed.id))
        blocked.update_network_settings(network_allow_list="198.18.0.0/15")
        report["allow_list"] = fields(blocked)
        blocked.update_network_settings(network_block_all=False)
        report["restored"] = fields(blocked)
        listed.update_network_settings(network_block_all=True)
        listed.refresh_data()
        report["blocked"] = fields(listed)
    finally:
        for sandbox in (blocked, listed):
            daytona.delete(sandbox)
    json.dump(report, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
