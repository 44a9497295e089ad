"""What egress policies and secrets cost at the API: changing a running sandbox's policy, and a
create with a secret or a policy against a plain one.

    sudo .venv/bin/python -m load.bench_egress_api [--changes 60] [--creates 10]

It starts its own stack (egress on: NAT and hostd's egress service, so a policy change really
rewrites the sandbox's nft set) on spare ports, no warm pool (every create boots), and goes
through the gateway with a fresh org's key:

* ``POST /v1/sandboxes/{id}/egress-policy`` on a started sandbox, alternating a deny policy with
  one network and an allow policy: the core locks the row, stores it and calls hostd's
  ``PUT /sandboxes/{id}/egress``, which rebuilds the egress sets; ``GET`` of it beside;
* ``POST /v1/sandboxes`` plain, with one secret (``secrets``) and with a deny policy
  (``egress``), in turns so drift on the machine touches all three alike; each sandbox is
  deleted before the next create.

Nothing is dialled from the sandboxes: no traffic leaves the machine.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import httpx
import msgspec

from cli.stack import Stack
from load.bench_core import machine, report
from tests.private_stack import stack_config
from tests.support import exclusive_index, mint_key


def timed(send: Callable[[], httpx.Response], status: int) -> tuple[float, httpx.Response]:
    started = time.perf_counter()
    response = send()
    elapsed = (time.perf_counter() - started) * 1000
    if response.status_code != status:
        raise RuntimeError(f"unexpected {response.status_code}: {response.text}")
    return elapsed, response


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=60, help="policy changes (and reads)")
    parser.add_argument("--creates", type=int, default=10, help="creates of each kind")
    args = parser.parse_args()

    with exclusive_index("stack") as n:
        var = Path(tempfile.mkdtemp(prefix=f"dnah-bench-egress-api{n}-"))
        config = stack_config(n, var, f"bench-egress-api-{n}", {"DNAH_WARM_POOL": ""})
        stack = Stack(msgspec.structs.replace(config, egress="nat"), say=lambda _: None)
        stack.start()
        try:
            print(f"machine: {machine()}\ndate: {time.strftime('%Y-%m-%d %H:%M %Z')}")
            print(f"load average at start: {' '.join(Path('/proc/loadavg').read_text().split()[:3])}\n")
            url = stack.config.gateway_url
            with httpx.Client(
                base_url=url, headers={"authorization": f"Bearer {stack.admin_token}"}
            ) as admin:
                key = mint_key(admin, "bench-egress-api")
            with httpx.Client(base_url=url, headers={"authorization": f"Bearer {key}"}, timeout=120) as org:
                run(org, args.changes, args.creates)
        finally:
            stack.remove()


def run(org: httpx.Client, changes: int, creates: int) -> None:
    sid = org.post("/v1/sandboxes", json={}).raise_for_status().json()["id"]
    policies = [{"mode": "deny", "cidrs": ["198.18.0.0/15"]}, {"mode": "allow"}]
    path = f"/v1/sandboxes/{sid}/egress-policy"
    changed = [timed(partial(org.post, path, json=policies[i % 2]), 200)[0] for i in range(changes)]
    read = [timed(lambda: org.get(path), 200)[0] for _ in range(changes)]
    org.delete(f"/v1/sandboxes/{sid}").raise_for_status()
    report("change a running sandbox's policy", changed)
    report("read it", read)

    org.post("/v1/secrets", json={"name": "BENCH_KEY", "value": "v" * 40, "hosts": ["api.example.com"]})
    kinds = {
        "plain": {},
        "one secret": {"secrets": ["BENCH_KEY"]},
        "deny policy": {"egress": {"mode": "deny"}},
    }
    samples: dict[str, list[float]] = {kind: [] for kind in kinds}
    for i in range(creates):
        order = list(kinds)[i % 3 :] + list(kinds)[: i % 3]
        for kind in order:
            elapsed, made = timed(partial(org.post, "/v1/sandboxes", json=kinds[kind]), 201)
            samples[kind].append(elapsed)
            org.delete(f"/v1/sandboxes/{made.json()['id']}").raise_for_status()
    for kind, ms in samples.items():
        report(f"create, {kind}", ms)


if __name__ == "__main__":
    main()
