"""Every link in the README and docs/ resolves, and every repository file the code and docs cite exists:
a reader following a pointer never lands on nothing (and nothing points outside the repository)."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SOURCES = [p for d in ("sansa_gpu", "kernels", "benchmarks", "tests", "examples", "docs", ".ci")
           for p in sorted((ROOT / d).rglob("*")) if p.suffix in (".py", ".cu", ".cuh", ".md", ".sh", "")
           and p.is_file() and "__pycache__" not in p.parts] + [ROOT / "README.md", ROOT / "pyproject.toml"]
CITED = re.compile(r"(?<![\w/.-])((?:docs|benchmarks|kernels|examples|tests|sansa_gpu|\.ci)/[A-Za-z0-9_./-]*"
                   r"[A-Za-z0-9_-]\.(?:md|py|cuh|cu|jsonl|sh|png|toml))(?!\w)")
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_markdown_links_resolve(doc):
    for target in LINK.findall(doc.read_text(encoding="utf-8")):
        if "://" in target or target.startswith("mailto:"):
            continue
        assert (doc.parent / target).exists(), f"{doc.relative_to(ROOT)} links {target}, which does not exist"


def test_cited_repository_files_exist():
    missing = []
    for path in SOURCES:
        text = path.read_text(encoding="utf-8", errors="replace")
        for cited in CITED.findall(text):
            if "<" in cited or "*" in cited:
                continue
            if not (ROOT / cited).exists():
                missing.append(f"{path.relative_to(ROOT)} cites {cited}")
    assert not missing, "\n".join(missing)


def test_nothing_cites_the_design_notes_outside_the_repository():
    offenders = [str(p.relative_to(ROOT)) for p in SOURCES
                 if re.search(r"\b(DESIGN|STYLE)\.md\b", p.read_text(encoding="utf-8", errors="replace"))]
    assert not offenders, f"cite a file outside the repository: {offenders}"
