"""The result tables of docs/benchmarks.md are what benchmarks/table.py prints from the committed records.

Each table sits between ``<!-- table:NAME -->`` and ``<!-- /table -->``; the text between the marker
lines must equal the generator's output, so a record changed without the page (or the page without
a record) fails here. Fix with ``python benchmarks/table.py --write docs/benchmarks.md`` after a rerun,
never by typing a figure. Reads only the markdown pages and benchmarks/results/*.jsonl (no data, no
network, no numba).
"""

import copy
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "docs" / "benchmarks.md"  # the one page that holds the generated tables


def _table_module():
    spec = importlib.util.spec_from_file_location("benchmarks_table", ROOT / "benchmarks" / "table.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


table = _table_module()
RECORDS = table.load()
TABLES = table.render(RECORDS)
MARKED = table.marked(README.read_text())


def test_every_generated_table_is_marked_once_in_the_readme():
    names = [n for n, _ in MARKED]
    assert sorted(names) == sorted(table.TABLES), names


def test_no_other_page_holds_a_generated_table():
    """A table copied into another page would not be checked: the benchmarks page is the only home."""
    for page in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]:
        if page != README:
            assert table.marked(page.read_text()) == [], page


@pytest.mark.parametrize("name", list(table.TABLES))
def test_readme_table_equals_the_records(name):
    body = dict(MARKED)[name]
    assert body == TABLES[name], (
        f"README table:{name} differs from benchmarks/results; regenerate with "
        f"`python benchmarks/table.py --write docs/benchmarks.md` (never edit a figure by hand)")


def test_check_reports_nothing_on_the_committed_readme():
    assert table.problems(README.read_text(), TABLES) == []


def _first_line_with(rows, predicate):
    return next(r for r in rows if predicate(r))


def test_a_changed_record_makes_the_check_fail():
    """The check is sensitive to one figure of one record, in each results file the README uses."""
    text = README.read_text()
    edits = [
        ("compare_official", lambda r: r["implementation"] == "ours", "recall@20", 0.001),
        ("scale", lambda r: r["data"] == "synthetic_1000000", "peak_rss_gb", 1.0),
        ("score", lambda r: r.get("what") == "score_cpu_vs_official", "speedup", 1.0),
        ("refine_tol", lambda r: r.get("implementation") == "ours", "recall@20", 0.01),
    ]
    for stem, which, field, delta in edits:
        res = copy.deepcopy(RECORDS)
        # the last matching record is the one a table uses
        rec = _first_line_with(reversed(res[stem]), which)
        rec[field] += delta
        errors = table.problems(text, table.render(res))
        assert errors and all("differs from the records" in e for e in errors), (stem, field)


def test_a_changed_readme_figure_makes_the_check_fail():
    text = README.read_text()
    row = TABLES["score"].splitlines()[2]  # the first data row of one table
    assert text.count(row) == 1
    cells = row.split(" | ")
    cells[-1] = "9" + cells[-1]  # one figure typed over
    errors = table.problems(text.replace(row, " | ".join(cells)), TABLES)
    assert len(errors) == 1 and errors[0].startswith("table:score differs")


def test_a_missing_record_fails_generation_instead_of_dropping_the_row():
    res = copy.deepcopy(RECORDS)
    res["scale"] = [r for r in res["scale"] if r["data"] != "synthetic_500000" or r["implementation"] != "ours"]
    synthetic = table.synthetic(res)
    assert "500k" not in synthetic  # a row set derived from the records shrinks ...
    assert table.problems(README.read_text(), table.render(res))  # ... and the README no longer matches
    res = copy.deepcopy(RECORDS)
    res["scale"] = [r for r in res["scale"] if not (r["data"] == "epinions" and r.get("ordering") == "amd")]
    with pytest.raises(LookupError):  # a row the README names has no record: no table at all
        table.scale_icf(res)


def test_marker_problems_are_reported():
    body = TABLES["score"]
    twice = f"<!-- table:score -->\n{body}<!-- /table -->\n" * 2
    assert any("marked 2 times" in e for e in table.problems(twice, {"score": body}))
    unknown = f"<!-- table:nope -->\n{body}<!-- /table -->\n"
    assert any("no generator" in e for e in table.problems(unknown, {}))
    assert any("not marked" in e for e in table.problems("", {"score": body}))
