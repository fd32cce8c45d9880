"""`callcenter kb …` through typer's runner, on a SQLite data dir."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from typer.testing import CliRunner

from callcenter.cli_kb import kb_app

app = typer.Typer()
app.add_typer(kb_app, name="kb")
runner = CliRunner()


def kb(tmp_path: Path, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["kb", *args, "--data-dir", str(tmp_path / "data")])
    return result.exit_code, result.output


def test_search_works_out_of_the_box(tmp_path: Path) -> None:
    code, out = kb(tmp_path, "search", "how do I get my money back", "--json")
    assert code == 0
    hits = json.loads(out[out.index("[") :])
    assert hits[0]["slug"] == "en-refund-status" and 0 < hits[0]["confidence"] <= 1
    code, out = kb(tmp_path, "search", "发票怎么开", "--language", "zh-CN")
    assert code == 0 and "zh-invoice" in out.splitlines()[0]
    code, out = kb(tmp_path, "search", "xylophone")
    assert code == 1 and "no matching article" in out


def test_show_import_export_gaps(tmp_path: Path) -> None:
    code, out = kb(tmp_path, "show", "en-invoice", "--history")
    assert code == 0 and "# Get an invoice or receipt" in out and "v1" in out and "sample" in out
    assert kb(tmp_path, "show", "nope")[0] == 1

    export = tmp_path / "out.csv"
    code, out = kb(tmp_path, "export", str(export))
    assert code == 0 and "20 articles written" in out and export.read_text().startswith("slug,language")

    folder = tmp_path / "new"
    folder.mkdir()
    (folder / "gift-cards.md").write_text(
        "---\nlanguage: en\ntitle: Gift cards\n---\nWe sell gift cards online.\n"
    )
    code, out = kb(tmp_path, "import", str(folder), "--author", "alice")
    assert code == 0 and "1 created, 0 updated, 0 unchanged" in out
    code, out = kb(tmp_path, "show", "gift-cards", "--json")
    assert json.loads(out[out.index("{") :])["versions"][0]["author"] == "alice"

    (folder / "broken.md").write_text("no front matter\n")
    code, out = kb(tmp_path, "import", str(folder))
    assert code == 1 and "broken.md: expected front matter" in out

    code, out = kb(tmp_path, "gaps")
    assert code == 0 and "no gaps recorded" in out
