"""The flow_version table (append-only history) and the flow-file helpers the registry uses."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from callcenter.ivr.versions import declared_id, read_flow_file, write_atomic
from callcenter.store import Store
from callcenter.store import flow_versions as fv


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    store = Store(f"sqlite:///{tmp_path / 'cc.db'}")
    store.create_all()  # the table is created with the others
    return store.engine


def test_versions_count_per_flow_and_keep_who_when_and_why(engine: Engine) -> None:
    a1, created = fv.add_flow_version(engine, "a", "one\n", author="alice", source="api", message="first")
    assert created and a1.version == 1
    b1, _ = fv.add_flow_version(engine, "b", "bee\n", author="bob", source="cli")
    a2, _ = fv.add_flow_version(engine, "a", "two\n", author="carol", source="file")
    assert (b1.version, a2.version) == (1, 2)
    rows = fv.list_flow_versions(engine, "a")
    assert [(r.version, r.author, r.source, r.message) for r in rows] == [
        (1, "alice", "api", "first"),
        (2, "carol", "file", None),
    ]
    assert rows[0].created_at.tzinfo is not None and rows[0].created_at <= rows[1].created_at
    assert rows[1].sha256 == fv.text_sha256("two\n")
    assert {k: r.version for k, r in fv.latest_flow_versions(engine).items()} == {"a": 2, "b": 1}
    assert fv.latest_flow_version(engine, "a") == a2
    assert fv.get_flow_version(engine, "a", 1) == a1 and fv.get_flow_version(engine, "a", 3) is None


def test_the_same_text_again_is_not_a_new_version(engine: Engine) -> None:
    fv.add_flow_version(engine, "a", "one\n", author="x", source="api")
    row, created = fv.add_flow_version(engine, "a", "one\n", author="y", source="file")
    assert not created and (row.version, row.author) == (1, "x")


def test_a_rollback_is_a_new_row_and_the_history_stays(engine: Engine) -> None:
    fv.add_flow_version(engine, "a", "one\n", author="x", source="api")
    fv.add_flow_version(engine, "a", "two\n", author="x", source="api")
    row, created = fv.add_flow_version(
        engine, "a", "one\n", author="y", source="rollback", rolled_back_from=1
    )
    assert created and (row.version, row.rolled_back_from) == (3, 1)
    assert [r.yaml for r in fv.list_flow_versions(engine, "a")] == ["one\n", "two\n", "one\n"]
    assert row.diff == "--- a v2\n+++ a v3\n@@ -1 +1 @@\n-two\n+one\n"


def test_the_first_diff_is_against_nothing(engine: Engine) -> None:
    row, _ = fv.add_flow_version(engine, "a", "x: 1\ny: 2\n", author="x", source="file")
    assert row.diff == "--- /dev/null\n+++ a v1\n@@ -0,0 +1,2 @@\n+x: 1\n+y: 2\n"


def test_a_missing_final_newline_is_marked_as_diff_does() -> None:
    assert fv.unified_diff("a\n", "a\nb", "old", "new").endswith("+b\n\\ No newline at end of file\n")
    assert fv.unified_diff("same", "same", "old", "new") == ""


def test_a_failing_file_write_leaves_no_version(engine: Engine) -> None:
    def fail(row: fv.FlowVersion) -> None:
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        fv.add_flow_version(engine, "a", "one\n", author="x", source="api", before_commit=fail)
    assert fv.list_flow_versions(engine, "a") == []


def test_a_version_number_taken_by_another_writer_is_retried(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    fv.add_flow_version(engine, "a", "one\n", author="x", source="api")
    real = fv._latest
    stale = [fv.latest_flow_version(engine, "a")]
    fv.add_flow_version(engine, "a", "two\n", author="other process", source="cli")

    def first_stale(session: object, flow_id: str) -> fv.FlowVersion | None:
        return stale.pop() if stale else real(session, flow_id)  # type: ignore[arg-type]

    monkeypatch.setattr(fv, "_latest", first_stale)
    row, created = fv.add_flow_version(engine, "a", "three\n", author="y", source="api")
    assert created and row.version == 3
    assert row.diff.startswith("--- a v2\n")


def test_unknown_sources_are_refused(engine: Engine) -> None:
    with pytest.raises(ValueError, match="source"):
        fv.add_flow_version(engine, "a", "x", author="x", source="web")


def test_public_view(engine: Engine) -> None:
    row, _ = fv.add_flow_version(engine, "a", "one\n", author="x", source="api", message="m")
    view = fv.flow_version_public(row)
    assert view["version"] == 1 and view["created_at"].endswith("+00:00") and "yaml" not in view
    assert fv.flow_version_public(row, text=True)["yaml"] == "one\n"


# -- files ---------------------------------------------------------------------------------------------


def test_write_atomic_replaces_the_file_keeps_its_mode_and_leaves_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "f.yaml"
    path.write_text("old\n", encoding="utf-8")
    os.chmod(path, 0o640)
    state = write_atomic(path, "new\r\ntext\n")
    assert path.read_bytes() == b"new\r\ntext\n"  # exactly the published text (its hash matches)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["f.yaml"]
    assert (state.size, state.sha256) == (len(b"new\r\ntext\n"), fv.text_sha256("new\r\ntext\n"))


def test_read_flow_file_bounds_size_and_requires_utf8(tmp_path: Path) -> None:
    ok = tmp_path / "ok.yaml"
    ok.write_bytes(b"id: x\r\n")
    text, state, error = read_flow_file(ok)
    assert (text, error) == ("id: x\r\n", None) and state is not None
    big = tmp_path / "big.yaml"
    big.write_bytes(b"#" * 2048)
    assert str(read_flow_file(big, max_bytes=1024)[2]) == f"{big}:1:1: file is larger than 1 KiB: not a flow"
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"text: caf\xe9\n")
    assert "not UTF-8" in str(read_flow_file(latin)[2])
    assert "cannot read" in str(read_flow_file(tmp_path / "missing.yaml")[2])


def test_declared_id() -> None:
    assert declared_id("id: main\nstart: x\n") == "main"
    assert declared_id("id: [\n") is None
    assert declared_id("- a list\n") is None
