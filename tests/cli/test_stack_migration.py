"""What ``make up`` prints about a var/ left by the namespace runtime."""

from __future__ import annotations

from cli.stack import migration_summary
from hosts.runtime.oci.migrate import Outcome, Report


def test_nothing_old_prints_nothing() -> None:
    assert migration_summary(Report(outcomes=[])) == []


def test_each_thing_found_is_named_with_where_its_old_data_is() -> None:
    report = Report(
        outcomes=[
            Outcome(kind="sandbox", id="a", migrated=True, kept="/v/hostd/legacy/a"),
            Outcome(kind="sandbox", id="b", migrated=False, kept="/v/hostd/legacy/b", reason="template gone"),
            Outcome(kind="snapshot", id="s", migrated=False, kept="/v/snapshots/s", reason="upper layer"),
        ]
    )
    lines = migration_summary(report)
    assert lines[1:4] == [
        "  brought over: sandbox a (its old upper layer is kept in /v/hostd/legacy/a)",
        "  NOT brought over: sandbox b: template gone; old data kept in /v/hostd/legacy/b",
        "  NOT brought over: snapshot s: upper layer; old data kept in /v/snapshots/s",
    ]
    assert "Migrating from the namespace runtime" in lines[-1]
