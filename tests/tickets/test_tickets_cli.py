from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from callcenter.cli_tickets import customers_app, tickets_app
from callcenter.core.config import load_settings
from callcenter.store import Store
from callcenter.tickets import TicketRepo

runner = CliRunner()


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)  # no ./config.yaml
    for name in ("CALLCENTER_DATABASE_URL", "CALLCENTER_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path / "data"


def _store(data_dir: Path) -> Store:
    return Store.from_settings(load_settings(None, {"data_dir": str(data_dir)}, env={}))


def test_ticket_commands(data_dir: Path) -> None:
    store = _store(data_dir)
    store.add_agent("bob", "pw", "callcenter", {})
    number = TicketRepo(store.engine).create("Refund for order 55123", queue="billing").id
    store.close()
    d = ["--data-dir", str(data_dir)]

    listed = runner.invoke(tickets_app, ["list", "--json", *d])
    assert listed.exit_code == 0, listed.output
    assert [(t["number"], t["status"]) for t in json.loads(listed.output)] == [(number, "new")]

    assigned = runner.invoke(tickets_app, ["assign", str(number), "bob", *d])
    assert assigned.exit_code == 0 and f"ticket {number} assigned to bob" in assigned.output
    assert runner.invoke(tickets_app, ["assign", str(number), "nobody", *d]).exit_code == 1

    refused = runner.invoke(tickets_app, ["set-status", str(number), "closed", *d])
    assert refused.exit_code == 1
    assert "cannot change status from open to closed" in refused.output

    solved = runner.invoke(tickets_app, ["set-status", str(number), "solved", "--by", "agent:bob", *d])
    assert solved.exit_code == 0 and f"ticket {number} is solved" in solved.output

    shown = runner.invoke(tickets_app, ["show", str(number), *d])
    assert shown.exit_code == 0
    assert "Refund for order 55123" in shown.output and "agent:bob  status  open → solved" in shown.output
    assert runner.invoke(tickets_app, ["show", "999", *d]).exit_code == 1
    assert runner.invoke(tickets_app, ["list", "--status", "done", *d]).exit_code == 2


def test_customer_commands(data_dir: Path, tmp_path: Path) -> None:
    d = ["--data-dir", str(data_dir)]
    added = runner.invoke(customers_app, ["add", "Ada", "--phone", "+49 30 111", "--vip", "3", *d])
    assert added.exit_code == 0, added.output
    csv_file = tmp_path / "c.csv"
    csv_file.write_text("name,phones,email\nBo,+8613812345678,bo@example.com\nCy,xyz,\n", encoding="utf-8")
    imported = runner.invoke(customers_app, ["import", str(csv_file), *d])
    assert imported.exit_code == 1  # one bad row
    assert "1 added, 0 updated, 1 skipped" in imported.output and "line 3" in imported.output
    listed = runner.invoke(customers_app, ["list", "--json", *d])
    rows = json.loads(listed.output)
    assert [(c["name"], c["phones"], c["vip"]) for c in rows] == [
        ("Ada", ["+4930111"], True),
        ("Bo", ["+8613812345678"], False),
    ]
    found = runner.invoke(customers_app, ["list", "--search", "+86 138 1234 5678", *d])
    assert "Bo" in found.output and "Ada" not in found.output
