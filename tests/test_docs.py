"""publisher.docs: the tag table rendered from the plan, and spliced into the docs pages."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from publisher.docs import (
    BEGIN,
    END,
    HEADERS,
    PLATFORMS_HEADER,
    Row,
    generic_rows,
    release_rows,
    render,
    splice,
    update_pages,
)
from publisher.errors import MatrixError, PublisherError, SelectionError
from publisher.matrix import Matrix, load
from publisher.plan import plan

# The user-facing page whose table the matrix must reproduce. It lives outside the checkout;
# SEED_ROWS below is its table, checked against the file wherever the file is present.
SEED = Path("/work/shared/seed/000_707b76e7f2a4c21e.txt")
needs_seed = pytest.mark.skipif(not SEED.is_file(), reason=f"{SEED} is not present")

# The seed page's table, as users read it.
SEED_ROWS = [
    ["latest", "most recent PyPi version", "3.7"],
    ["master", "master build", "3.7"],
    ["latest-python3.8", "most recent PyPi version", "3.8"],
    ["latest-python3.7", "most recent PyPi version", "3.7"],
    ["latest-python3.6", "most recent PyPi version", "3.6"],
    ["X.Y.Z", "X.Y.Z", "3.7"],
    ["X.Y.Z-python3.8", "X.Y.Z", "3.8"],
    ["X.Y.Z-python3.7", "X.Y.Z", "3.7"],
    ["X.Y.Z-python3.6", "X.Y.Z", "3.6"],
    ["core", "most recent PyPi version", "3.8"],
    ["core-X.Y.Z", "X.Y.Z", "3.8"],
]


def parse_table(markdown: str) -> tuple[list[str], list[str], list[list[str]]]:
    """The first markdown pipe table in ``markdown``: header cells, alignments, body rows."""
    lines: list[str] = []
    for line in markdown.splitlines():
        if line.lstrip().startswith("|"):
            lines.append(line.strip())
        elif lines:
            break
    cells = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]
    header, rule, *body = cells
    alignments = []
    for spec in rule:
        assert set(spec) <= {"-", ":"} and "-" in spec, spec
        if spec.startswith(":") and spec.endswith(":"):
            alignments.append("center")
        elif spec.endswith(":"):
            alignments.append("right")
        else:
            alignments.append("left")
    return header, alignments, body


def between_markers(text: str) -> str:
    start = text.index(BEGIN) + len(BEGIN)
    return text[start : text.index(END)]


@pytest.fixture(scope="module")
def shipped(shipped_matrix_path: Path) -> Matrix:
    return load(shipped_matrix_path)


@pytest.fixture
def page(tmp_path: Path) -> Path:
    path = tmp_path / "page.md"
    path.write_text(f"# Title\n\nProse before.\n\n{BEGIN}\nold table\n{END}\n\nProse after.\n")
    return path


# --- the generic table -----------------------------------------------------------------------


@needs_seed
def test_seed_table_parses_as_expected() -> None:
    header, alignments, body = parse_table(SEED.read_text(encoding="utf-8"))
    assert header == list(HEADERS)
    assert alignments == ["left", "center", "right"]
    assert body == SEED_ROWS


def test_generic_rows_are_the_seed_rows(shipped: Matrix) -> None:
    rows = generic_rows(shipped)
    assert [[r.tag, r.prefect, r.python] for r in rows] == SEED_ROWS


@needs_seed
def test_rendered_table_matches_the_seed_cell_by_cell(shipped: Matrix) -> None:
    rendered = parse_table(render(generic_rows(shipped)))
    seed = parse_table(SEED.read_text(encoding="utf-8"))
    assert rendered[0] == seed[0]
    assert rendered[1] == seed[1]
    assert len(rendered[2]) == len(seed[2])
    for got, want in zip(rendered[2], seed[2], strict=True):
        assert got == want


def test_render_shape(shipped: Matrix) -> None:
    lines = render(generic_rows(shipped)).splitlines()
    assert len(lines) == 2 + len(SEED_ROWS)
    assert len({len(line) for line in lines}) == 1  # columns are padded to one width
    assert all(line.startswith("|") and line.endswith("|") for line in lines)


def test_generic_rows_keep_python_3_10_as_text(make_matrix: Callable[..., Path]) -> None:
    path = make_matrix(
        versions=["3.2.1"],
        variants={"full": {"pythons": ["3.9", "3.10", "3.11"], "default_python": "3.10"}},
        tags=[
            {"tag": "latest", "variant": "full", "python": "default", "release": "latest"},
            {"tag": "{version}-python{python}", "variant": "full"},
        ],
    )
    rows = generic_rows(load(path))
    # Newest Python first, by number: 3.11, 3.10, 3.9 (not 3.9, 3.11, 3.10 as strings).
    assert [(r.tag, r.python) for r in rows] == [
        ("latest", "3.10"),
        ("X.Y.Z-python3.11", "3.11"),
        ("X.Y.Z-python3.10", "3.10"),
        ("X.Y.Z-python3.9", "3.9"),
    ]
    _, _, body = parse_table(render(rows))
    assert [cells[2] for cells in body] == ["3.10", "3.11", "3.10", "3.9"]


def test_generic_rows_of_the_prefect3_example(prefect3_matrix_path: Path) -> None:
    rows = generic_rows(load(prefect3_matrix_path))
    pythons = ["3.13", "3.12", "3.11", "3.10"]
    assert [(r.tag, r.prefect, r.python) for r in rows] == [
        ("X-latest", "most recent X release", "3.12"),
        *[(f"X-python{p}", "most recent X release", p) for p in pythons],
        *[(f"X.Y-python{p}", "most recent X.Y release", p) for p in pythons],
        *[(f"X.Y.Z-python{p}", "X.Y.Z", p) for p in pythons],
        *[(f"X-python{p}-kubernetes", "most recent X release", p) for p in pythons],
        *[(f"X.Y.Z-python{p}-kubernetes", "X.Y.Z", p) for p in pythons],
        *[(f"X-python{p}-client", "most recent X release", p) for p in pythons],
        *[(f"X.Y.Z-python{p}-client", "X.Y.Z", p) for p in pythons],
    ]
    assert {r.platforms for r in rows} == {"linux/amd64, linux/arm64"}


# --- the platforms column --------------------------------------------------------------------


def test_default_platform_keeps_the_three_column_table(shipped: Matrix) -> None:
    rows = generic_rows(shipped)
    assert {r.platforms for r in rows} == {"linux/amd64"}
    header, alignments, body = parse_table(render(rows))
    assert header == list(HEADERS)
    assert alignments == ["left", "center", "right"]
    assert all(len(cells) == 3 for cells in body)
    assert PLATFORMS_HEADER not in render(release_rows(shipped, "0.14.22"))


def test_platforms_column_when_an_image_has_other_platforms(prefect3_matrix_path: Path) -> None:
    header, alignments, body = parse_table(render(generic_rows(load(prefect3_matrix_path))))
    assert header == [*HEADERS, "Platforms"]
    assert alignments == ["left", "center", "right", "left"]
    assert body[0] == ["X-latest", "most recent X release", "3.12", "linux/amd64, linux/arm64"]
    assert {cells[3] for cells in body} == {"linux/amd64, linux/arm64"}


def test_platforms_column_per_variant(make_matrix: Callable[..., Path]) -> None:
    # One variant off the default is enough for the column; the others show theirs.
    path = make_matrix(
        versions=["3.2.1"],
        variants={
            "full": {"pythons": ["3.12"]},
            "client": {"pythons": ["3.12"], "platforms": ["linux/arm64", "linux/amd64"]},
        },
        tags=[
            {"tag": "{version}-python{python}", "variant": "full"},
            {"tag": "{version}-python{python}-client", "variant": "client"},
        ],
    )
    matrix = load(path)
    _, _, body = parse_table(render(generic_rows(matrix)))
    assert body == [
        ["X.Y.Z-python3.12", "X.Y.Z", "3.12", "linux/amd64"],
        ["X.Y.Z-python3.12-client", "X.Y.Z", "3.12", "linux/arm64, linux/amd64"],
    ]
    _, _, body = parse_table(render(release_rows(matrix, "3.2.1")))
    assert body == [
        ["3.2.1-python3.12", "3.2.1", "3.12", "linux/amd64"],
        ["3.2.1-python3.12-client", "3.2.1", "3.12", "linux/arm64, linux/amd64"],
    ]


def test_one_non_default_platform_gets_the_column(make_matrix: Callable[..., Path]) -> None:
    path = make_matrix(platforms=["linux/arm64"])
    header, _, body = parse_table(render(generic_rows(load(path))))
    assert header[-1] == PLATFORMS_HEADER
    assert {cells[3] for cells in body} == {"linux/arm64"}


def test_in_docs_false_hides_a_rule(shipped: Matrix) -> None:
    assert not [r for r in generic_rows(shipped) if "YYYYMMDD" in r.tag]


def test_rule_for_two_variants_gives_rows_for_each_variant(
    make_matrix: Callable[..., Path],
) -> None:
    path = make_matrix(
        versions=["0.14.10"],
        variants={"full": {"pythons": ["3.8"]}, "slim": {"pythons": ["3.7"]}},
        tags=[
            {"tag": "{version}-python{python}", "variant": "full"},
            {"tag": "{version}-{python}-x", "variant": ["full", "slim"]},
        ],
    )
    assert generic_rows(load(path)) == [
        Row(tag="X.Y.Z-python3.8", prefect="X.Y.Z", python="3.8"),
        Row(tag="X.Y.Z-3.8-x", prefect="X.Y.Z", python="3.8"),
        Row(tag="X.Y.Z-3.7-x", prefect="X.Y.Z", python="3.7"),
    ]


def test_docs_refuse_a_rule_that_gives_two_variants_one_tag(
    make_matrix: Callable[..., Path],
) -> None:
    path = make_matrix(
        versions=["0.14.10"],
        variants={"full": {"pythons": ["3.8"]}, "slim": {"pythons": ["3.8"]}},
        tags=[{"tag": "{version}-{python}-x", "variant": ["full", "slim"]}],
    )
    with pytest.raises(MatrixError, match="would belong to both"):
        generic_rows(load(path))


# --- one release's table ---------------------------------------------------------------------


@pytest.mark.parametrize("version", ["0.14.10", "0.14.22", "0.14.0"])
def test_release_rows_are_the_plan_tags_of_that_release(shipped: Matrix, version: str) -> None:
    rows = release_rows(shipped, version)
    planned = {
        (t.name, image.python_version)
        for image in plan(shipped).images
        if image.prefect_version == version
        for t in image.tags
    }
    assert len(rows) == len(planned)
    assert {(r.tag, r.python) for r in rows} == planned
    assert {r.prefect for r in rows} == {version}


def test_release_rows_of_the_highest_release_in_table_order(shipped: Matrix) -> None:
    assert [(r.tag, r.python) for r in release_rows(shipped, "0.14.22")] == [
        ("latest", "3.7"),
        ("latest-python3.8", "3.8"),
        ("latest-python3.7", "3.7"),
        ("latest-python3.6", "3.6"),
        ("0.14.22", "3.7"),
        ("0.14.22-python3.8", "3.8"),
        ("0.14.22-python3.7", "3.7"),
        ("0.14.22-python3.6", "3.6"),
        ("core", "3.8"),
        ("core-0.14.22", "3.8"),
    ]


def test_release_rows_of_an_older_release(shipped: Matrix) -> None:
    assert [(r.tag, r.prefect, r.python) for r in release_rows(shipped, "0.14.10")] == [
        ("0.14.10", "0.14.10", "3.7"),
        ("0.14.10-python3.8", "0.14.10", "3.8"),
        ("0.14.10-python3.7", "0.14.10", "3.7"),
        ("0.14.10-python3.6", "0.14.10", "3.6"),
        ("core-0.14.10", "0.14.10", "3.8"),
    ]


def test_release_rows_of_a_candidate(prefect3_matrix_path: Path) -> None:
    rows = release_rows(load(prefect3_matrix_path), "3.3.0rc1")
    assert [r.tag for r in rows] == [
        f"3.3.0rc1-python{p}{flavour}"
        for flavour in ("", "-kubernetes", "-client")
        for p in ("3.13", "3.12", "3.11", "3.10")
    ]
    assert {r.platforms for r in rows} == {"linux/amd64, linux/arm64"}


@pytest.mark.parametrize("version", ["0.13.21", "0.14.23", "1.0"])
def test_release_rows_of_an_unlisted_version(shipped: Matrix, version: str) -> None:
    with pytest.raises(SelectionError) as info:
        release_rows(shipped, version)
    message = str(info.value)
    assert repr(version) in message
    assert "not listed" in message
    assert str(shipped.path) in message


def test_release_rows_of_a_non_canonical_version(shipped: Matrix) -> None:
    with pytest.raises(SelectionError) as info:
        release_rows(shipped, "v0.14.10")
    assert "write '0.14.10'" in str(info.value)


# --- splicing into pages ---------------------------------------------------------------------


def test_splice_replaces_only_between_markers() -> None:
    page = f"before\n{BEGIN}\nold\nrows\n{END}\nafter\n"
    assert splice(page, "NEW", name="p.md") == f"before\n{BEGIN}\nNEW\n{END}\nafter\n"


def test_splice_is_idempotent(shipped: Matrix) -> None:
    table = render(generic_rows(shipped))
    once = splice(f"a\n{BEGIN}\n{END}\nb\n", table, name="p.md")
    assert splice(once, table, name="p.md") == once
    assert between_markers(once) == f"\n{table}\n"


@pytest.mark.parametrize(
    "text",
    [
        "no markers at all\n",
        f"{BEGIN}\nonly the start\n",
        f"only the end\n{END}\n",
        f"{END}\nreversed\n{BEGIN}\n",
    ],
    ids=["none", "begin-only", "end-only", "reversed"],
)
def test_splice_without_markers(text: str) -> None:
    with pytest.raises(PublisherError) as info:
        splice(text, "table", name="docs/page.md")
    message = str(info.value)
    assert message.startswith("docs/page.md: no tag-table markers")
    assert BEGIN in message
    assert "\n" not in message


def test_update_pages_write(page: Path, shipped: Matrix) -> None:
    table = render(generic_rows(shipped))
    assert update_pages([page], table, check=False) == []
    text = page.read_text(encoding="utf-8")
    assert text == f"# Title\n\nProse before.\n\n{BEGIN}\n{table}\n{END}\n\nProse after.\n"
    # Now fresh: a check finds nothing and nothing changes.
    assert update_pages([page], table, check=True) == []
    assert page.read_text(encoding="utf-8") == text


def test_update_pages_check_reports_a_diff_and_leaves_the_file(page: Path, shipped: Matrix) -> None:
    before = page.read_text(encoding="utf-8")
    mtime = page.stat().st_mtime_ns
    table = render(generic_rows(shipped))
    (diff,) = update_pages([page], table, check=True)
    assert page.read_text(encoding="utf-8") == before
    assert page.stat().st_mtime_ns == mtime
    assert f"--- {page} (on disk)" in diff
    assert f"+++ {page} (from the matrix)" in diff
    assert "-old table\n" in diff
    assert "+| latest " in diff


def test_update_pages_reports_each_stale_page(tmp_path: Path, page: Path) -> None:
    fresh = tmp_path / "fresh.md"
    fresh.write_text(f"{BEGIN}\nT\n{END}\n")
    stale = tmp_path / "stale.md"
    stale.write_text(f"{BEGIN}\nold\n{END}\n")
    diffs = update_pages([page, fresh, stale], "T", check=True)
    assert len(diffs) == 2
    assert str(page) in diffs[0] and str(stale) in diffs[1]


def test_update_pages_without_markers(tmp_path: Path) -> None:
    path = tmp_path / "plain.md"
    path.write_text("# No table here\n")
    with pytest.raises(PublisherError) as info:
        update_pages([path], "T", check=False)
    assert str(path) in str(info.value)
    assert path.read_text() == "# No table here\n"


def test_update_pages_missing_page(tmp_path: Path) -> None:
    with pytest.raises(PublisherError) as info:
        update_pages([tmp_path / "gone.md"], "T", check=True)
    assert "gone.md" in str(info.value)
    assert "\n" not in str(info.value)


# --- drift: the repository's pages hold the table the matrix gives ---------------------------


@pytest.mark.parametrize("name", ["docs/images.md", "README.md"])
def test_repository_pages_are_up_to_date(repo_root: Path, shipped: Matrix, name: str) -> None:
    table = render(generic_rows(shipped))
    path = repo_root / name
    assert update_pages([path], table, check=True) == [], (
        f"{name} is stale; run `publisher docs --write`"
    )
    _, _, body = parse_table(between_markers(path.read_text(encoding="utf-8")))
    assert body == SEED_ROWS


def test_row_is_frozen() -> None:
    row: Any = Row(tag="latest", prefect="most recent PyPi version", python="3.7")
    with pytest.raises(AttributeError):
        row.tag = "other"
