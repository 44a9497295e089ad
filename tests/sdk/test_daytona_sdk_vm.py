"""The Daytona SDK's create/exec/fs flow (``daytona_flow.py``, the same script the OCI stack
runs) with every sandbox a QEMU microVM: the SDK cannot tell, and must not have to. Run through
the gateway, as a user configures it; the assertions are ``test_daytona_sdk.check_report``'s.
Its two VMs are deleted by the flow, and the host must hold nothing of them afterwards."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.sdk import test_daytona_sdk as oci_flow
from tests.vm_stack import VmStack, the_vm_is_gone

sdk_python = oci_flow.sdk_python  # the fixture installing the SDK's virtualenv

pytestmark = [pytest.mark.stack, pytest.mark.vm]


def test_the_daytona_sdk_flow_runs_on_vm_sandboxes(vm_stack: VmStack, sdk_python: Path) -> None:
    key = vm_stack.new_key("sdk-vm")
    report, stderr = oci_flow.run_flow(sdk_python, vm_stack.stack.config.gateway_url, key)
    print(f"\nDaytona SDK on QEMU VMs, ms per call: {report['ms']}")
    oci_flow.check_report(report, stderr, others=[])
    the_vm_is_gone(vm_stack, report["created"]["id"])
    with vm_stack.client() as c:
        c.headers["authorization"] = f"Bearer {key}"
        assert c.get("/v1/sandboxes").json()["items"] == [], "the SDK's sandboxes are all deleted"
