"""SDK 0.226.1, unmodified: ``Daytona.list`` with its query (filters, sorts, one sandbox a
page so that it follows cursors), and the backup and build-log calls of its generated API
client; prints a JSON report. Run by ``test_daytona_list.py`` in the SDK's own virtualenv,
configured with ``DAYTONA_API_URL`` and ``DAYTONA_API_KEY`` only, importing nothing of the
project.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from typing import Any

from daytona import (
    CreateSandboxFromSnapshotParams,
    Daytona,
    ListSandboxesQuery,
    SandboxListSortDirection,
    SandboxListSortField,
    SandboxState,
)


def names(daytona: Daytona, **query: Any) -> list[str]:
    return [s.name for s in daytona.list(ListSandboxesQuery(labels={"flow": "list"}, limit=1, **query))]


def main() -> int:
    report: dict[str, Any] = {}
    daytona = Daytona()
    made = [
        daytona.create(CreateSandboxFromSnapshotParams(name=name, labels={"flow": "list"}))
        for name in ("sdk-b", "sdk-a", "sdk-c")
    ]
    try:
        made[2].stop()
        by_name = {"sort": SandboxListSortField.NAME, "order": SandboxListSortDirection.ASC}
        report["newest_first"] = names(daytona)
        report["by_name"] = names(daytona, **by_name)
        report["started"] = names(daytona, states=[SandboxState.STARTED], **by_name)
        report["both_states"] = names(daytona, states=[SandboxState.STARTED, SandboxState.STOPPED], **by_name)
        report["name_prefix"] = names(daytona, name="SDK-A")
        report["not_public"] = len(names(daytona, is_public=False))
        report["public"] = names(daytona, is_public=True)

        api = daytona._sandbox_api  # the SDK's generated client: backups have no method above it
        sandbox = made[0]
        backed_up = api.create_backup(sandbox.id)
        fetched = daytona.get(sandbox.id)
        report["backup"] = [backed_up.backup_state, fetched.backup_state, bool(fetched.backup_created_at)]
        url = api.get_build_logs_url(sandbox.id).url
        request = urllib.request.Request(
            url + "?follow=true", headers={"Authorization": f"Bearer {os.environ['DAYTONA_API_KEY']}"}
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            report["build_log"] = [answer.status, answer.read().decode().startswith("# template ")]
    finally:
        for sandbox in made:
            daytona.delete(sandbox)
    json.dump(report, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
