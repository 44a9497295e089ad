"""``GET /metrics``: the cluster in Prometheus' text format, for operators (admin key).

Gauges come from the database (``core/db/metrics.py``), so every core replica reports the
same cluster-wide numbers; ``dnah_http_requests_total`` counts this process's answers by
status class (a counter: it restarts at 0 with the process, which Prometheus handles).
Written by hand: the format is a few lines of text, not worth a dependency.
"""

from __future__ import annotations

from collections import Counter

from litestar import Request, Response, get
from litestar.di import Provide

from core.db import metrics as metrics_db
from core.http.common.deps import provide_admin
from core.services.auth import Principal
from core.states import DISK_STATES, LIVE_STATES, RUNNING_STATES

REQUESTS: Counter[str] = Counter()
"""Answers of this process by status class (``2xx``…), fed by ``core/http/middleware.py``."""

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@get("/metrics", dependencies={"principal": Provide(provide_admin)})
async def metrics(request: Request, principal: Principal) -> Response[str]:
    numbers = await metrics_db.read(request.app.state.db, list(RUNNING_STATES), list(DISK_STATES))
    out = _Writer()
    out.family("dnah_sandboxes", "gauge", "Live sandboxes of real orgs, by state.")
    for state in sorted(LIVE_STATES):
        out.sample("dnah_sandboxes", numbers.sandboxes.get(state, 0), state=state)
    out.family("dnah_warm_pool_sandboxes", "gauge", "Started warm-pool sandboxes waiting for a create.")
    configured = request.app.state.config.warm_pool
    for template in sorted(set(configured) | set(numbers.warm_pool)):
        out.sample("dnah_warm_pool_sandboxes", numbers.warm_pool.get(template, 0), template=template)
    families = {
        "dnah_host_up": "1 for a ready host with a recent heartbeat state, by host.",
        "dnah_host_cpu": "vCPUs a host offers (before overcommit).",
        "dnah_host_ram_mb": "Memory a host offers, MB (before overcommit).",
        "dnah_host_disk_gb": "Disk a host offers, GB.",
        "dnah_host_used_cpu": "vCPUs of the sandboxes that hold CPU on a host.",
        "dnah_host_used_ram_mb": "Memory of the sandboxes that hold memory on a host, MB.",
        "dnah_host_used_disk_gb": "Disk of the sandboxes whose disk is on a host, GB.",
        "dnah_host_heartbeat_age_seconds": "Seconds since a host's last heartbeat.",
    }
    for name, help_text in families.items():
        out.family(name, "gauge", help_text)
        for host in numbers.hosts:
            value = {
                "dnah_host_up": int(host.state == "ready"),
                "dnah_host_cpu": host.cpu,
                "dnah_host_ram_mb": host.ram_mb,
                "dnah_host_disk_gb": host.disk_gb,
                "dnah_host_used_cpu": host.used_cpu,
                "dnah_host_used_ram_mb": host.used_ram_mb,
                "dnah_host_used_disk_gb": host.used_disk_gb,
                "dnah_host_heartbeat_age_seconds": round(host.heartbeat_age_s, 3),
            }[name]
            out.sample(name, value, host=host.name, state=host.state)
    out.family("dnah_snapshots", "gauge", "Signed snapshots kept.")
    out.sample("dnah_snapshots", numbers.snapshots)
    out.family("dnah_snapshot_bytes", "gauge", "Bytes of data in the kept snapshots.")
    out.sample("dnah_snapshot_bytes", numbers.snapshot_bytes)
    out.family("dnah_webhook_deliveries", "gauge", "Webhook deliveries kept, by status.")
    for status in ("pending", "delivered", "dead"):
        out.sample("dnah_webhook_deliveries", numbers.webhook_deliveries.get(status, 0), status=status)
    out.family("dnah_paid_last_hour", "gauge", "Base units paid on chain in the last hour, by currency.")
    for currency, amount in sorted(numbers.paid_last_hour.items()):
        out.sample("dnah_paid_last_hour", amount, currency=currency)
    out.family("dnah_http_requests_total", "counter", "Answers of this core process, by status class.")
    for status_class in ("1xx", "2xx", "3xx", "4xx", "5xx"):
        out.sample("dnah_http_requests_total", REQUESTS[status_class], status=status_class)
    return Response(out.text(), media_type=CONTENT_TYPE)


class _Writer:
    def __init__(self) -> None:
        self._lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str) -> None:
        self._lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]

    def sample(self, name: str, value: float, **labels: str) -> None:
        rendered = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
        self._lines.append(f"{name}{{{rendered}}} {value}" if rendered else f"{name} {value}")

    def text(self) -> str:
        return "\n".join(self._lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
