"""E2B's data plane (envd) at the core: the header rewrite (``dispatch.py``) and the
``/envd/{sandbox_id}/…`` app (``app.py``): ``/health``, ``/files`` and the Connect services
``process.Process`` and ``filesystem.Filesystem`` (docs/e2b.md, "Data plane (envd)")."""

from core.http.e2b.envd.app import EnvdApp
from core.http.e2b.envd.dispatch import with_e2b_headers

__all__ = ["EnvdApp", "with_e2b_headers"]
