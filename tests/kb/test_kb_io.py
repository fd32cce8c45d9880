"""Import and export: Markdown folders and CSV round-trip; bad files are reported and nothing changes."""

from __future__ import annotations

from pathlib import Path

import pytest

from callcenter.kb.io import SAMPLE_DIR, KbImportError, export_articles, import_articles, read_articles
from callcenter.kb.markdown import ArticleData, spoken_answer
from callcenter.kb.repo import KbRepo, article_data

TRICKY = ArticleData(
    slug="tricky",
    language="en",
    title='Formulas, quotes: and "colons"',
    body="- starts with a list item\n\n=SUM(A1) is not a formula here, 'quoted'\n",
    tags=("a|b-free", "x"),
    status="draft",
)


def _snapshot(repo: KbRepo) -> list[ArticleData]:
    return [article_data(a) for a in repo.list_articles()]


@pytest.mark.parametrize("target", ["folder", "kb.csv"])
def test_round_trip(sample_repo: KbRepo, empty_repo_factory: KbRepo, tmp_path: Path, target: str) -> None:
    tricky = TRICKY if target == "folder" else ArticleData(**{**TRICKY.__dict__, "tags": ("ab", "x")})
    sample_repo.save_article(tricky, author="t")
    path = tmp_path / target
    done: list[tuple[int, int]] = []
    assert export_articles(sample_repo, path, progress=lambda d, t: done.append((d, t))) == 21
    assert done[-1] == (21, 21)
    result = import_articles(empty_repo_factory, read_articles(path), author="import")
    assert len(result.created) == 21
    assert _snapshot(empty_repo_factory) == _snapshot(sample_repo)
    again = import_articles(empty_repo_factory, read_articles(path), author="import")
    assert (len(again.unchanged), again.created, again.updated) == (21, [], [])
    tricky_copy = empty_repo_factory.get_article("tricky")
    assert tricky_copy is not None and tricky_copy.id is not None
    assert [v.version for v in empty_repo_factory.versions(tricky_copy.id)] == [1]


def test_import_updates_changed_articles_as_new_versions(empty_repo: KbRepo, tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("---\nlanguage: en\ntitle: Gift cards\n---\nWe sell gift cards.\n")
    import_articles(empty_repo, read_articles(tmp_path), author="alice")
    (tmp_path / "a.md").write_text(
        "---\nlanguage: en\ntitle: Gift cards\n---\nWe no longer sell gift cards.\n"
    )
    result = import_articles(empty_repo, read_articles(tmp_path), author="bob")
    assert result.updated == ["a"]
    article = empty_repo.get_article("a")
    assert article is not None and article.id is not None
    assert [(v.version, v.author, v.body) for v in empty_repo.versions(article.id)] == [
        (1, "alice", "We sell gift cards.\n"),
        (2, "bob", "We no longer sell gift cards.\n"),
    ]
    assert empty_repo.search("no longer")[0].slug == "a"


def test_bad_files_are_all_reported(tmp_path: Path) -> None:
    (tmp_path / "ok.md").write_text("---\nlanguage: en\ntitle: Fine\n---\nFine.\n")
    (tmp_path / "nofront.md").write_text("Just text\n")
    (tmp_path / "badlang.md").write_text("---\nlanguage: english\ntitle: X\n---\nX\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "ok.md").write_text("---\nlanguage: en\ntitle: Same slug\n---\nY\n")
    with pytest.raises(KbImportError) as info:
        read_articles(tmp_path)
    messages = "\n".join(info.value.errors)
    assert "nofront.md: expected front matter" in messages
    assert "badlang.md: language 'english'" in messages
    assert "slug 'ok' is used by 2 articles" in messages


def test_csv_errors_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "kb.csv"
    path.write_text("slug,language,title,tags,status,body\nok,en,Fine,,published,Body\nBad Slug,en,T,,,B\n")
    with pytest.raises(KbImportError, match=r"kb.csv:3: slug 'Bad Slug'"):
        read_articles(path)


def test_sample_articles_are_well_formed() -> None:
    articles = read_articles(SAMPLE_DIR)
    assert sorted({a.language for a in articles}) == ["en", "zh"]
    assert sum(a.language == "en" for a in articles) == sum(a.language == "zh" for a in articles) == 10
    for article in articles:
        answer = spoken_answer(article.body)
        assert 20 <= len(answer) <= 400 and "#" not in answer and "*" not in answer, article.slug
