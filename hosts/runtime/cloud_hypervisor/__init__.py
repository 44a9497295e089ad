"""The Cloud Hypervisor backend: each sandbox is a VM of its own ``cloud-hypervisor`` process.

``runtime`` is the backend (``CloudHypervisorRuntime``), ``config`` its settings, ``api`` the
request and answer types of the VMM's REST API we use, ``client`` our client for it over the
``--api-socket`` Unix socket. The runtime is Cloud Hypervisor's hooks on
``hosts.vm.runtime.VmRuntime``, shared with the QEMU backend (``hosts/vm/``). See
docs/runtimes.md ("Cloud Hypervisor backend").
"""

from hosts.runtime.cloud_hypervisor.config import CloudHypervisorConfig
from hosts.runtime.cloud_hypervisor.runtime import CloudHypervisorRuntime

__all__ = ["CloudHypervisorConfig", "CloudHypervisorRuntime"]
