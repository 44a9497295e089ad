"""The production units in install/systemd/ say what docs/reliability.md promises.

systemd does not run here, so the units are parsed (systemd's INI dialect: sections, ``key=value``,
comments) and their invariants checked: each serves an existing ``dnah serve`` service, reads
the settings file, is restarted on failure within start limits, and hostd's stop spares the
sandboxes.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from cli.serve import SERVICES

UNITS = Path(__file__).resolve().parents[2] / "install" / "systemd"


def parse_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """Sections → keys → values (a key may repeat); refuses what systemd would not read."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, sep, value = line.partition("=")
        assert sep and current is not None and key.strip(), f"{path.name}:{number}: not key=value: {raw!r}"
        assert not value.endswith("\\"), f"{path.name}:{number}: continuation lines are not used here"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def _one(unit: dict[str, dict[str, list[str]]], section: str, key: str) -> str:
    values = unit.get(section, {}).get(key, [])
    assert len(values) == 1, f"[{section}] {key} should be set once, is {values}"
    return values[0]


def _seconds(value: str) -> float:
    """systemd's time spans as these units write them: 500ms, 30s, 300."""
    for suffix, scale in (("ms", 0.001), ("s", 1.0)):
        if value.endswith(suffix):
            return float(value.removesuffix(suffix)) * scale
    return float(value)


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_each_service_has_a_unit_that_restarts_it(service: str) -> None:
    unit = parse_unit(UNITS / f"dnah-{service}.service")
    assert set(unit) == {"Unit", "Service", "Install"}
    argv = shlex.split(_one(unit, "Service", "ExecStart"))
    assert argv[0].endswith("/dnah") and argv[1:] == ["serve", service]
    assert _one(unit, "Service", "EnvironmentFile") == "/etc/dnah/dnah.env"
    assert _one(unit, "Service", "Restart") == "on-failure"
    assert (
        0
        < _seconds(_one(unit, "Service", "RestartSec"))
        <= _seconds(_one(unit, "Service", "RestartMaxDelaySec"))
    )
    assert int(_one(unit, "Unit", "StartLimitBurst")) > 1
    assert _seconds(_one(unit, "Unit", "StartLimitIntervalSec")) > 0
    # the Granian worker of a killed main must not outlive it (it would serve beside the next one)
    assert _one(unit, "Service", "KillMode") == "mixed"
    assert _one(unit, "Install", "WantedBy") == "multi-user.target"


def test_stopping_hostd_does_not_signal_the_sandboxes_runc() -> None:
    unit = parse_unit(UNITS / "dnah-hostd.service")
    # control-group would SIGTERM every `runc run`, which forwards it to the sandbox: all stop
    assert _one(unit, "Service", "KillMode") not in ("control-group", "")
    assert _one(unit, "Service", "User") == "root"  # runc, the pool, netns and cgroups


def test_the_settings_example_names_only_settings_that_exist() -> None:
    known: set[str] = set()
    for config in ("core/config.py", "hosts/config.py", "gateway/config.py"):
        known |= set(re.findall(r'"(DNAH_[A-Z0-9_]+)"', (UNITS.parents[1] / config).read_text()))
    names = [
        line.partition("=")[0]
        for line in (UNITS / "dnah.env.example").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert names and set(names) <= known, set(names) - known
