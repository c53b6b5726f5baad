"""bench/common.py's report sections: a benchmark rewrites only its own part of a page."""

from __future__ import annotations

from pathlib import Path

from tests.bench_scripts import bench_fixture

common = bench_fixture("common")


def test_a_section_is_replaced_and_what_follows_it_kept_a_paragraph_apart(
    common, tmp_path: Path
) -> None:
    page = tmp_path / "page.md"
    page.write_text("# Page\n\n<!-- begin:a -->\nold\n<!-- end:a -->\n\n## Reading\n\nmine\n")
    text = common.replace_section(page, "a", "new\n")
    assert text == "# Page\n\n<!-- begin:a -->\nnew\n<!-- end:a -->\n\n## Reading\n\nmine\n"
    page.write_text(text)
    assert common.replace_section(page, "a", "new") == text  # a rerun changes nothing


def test_a_missing_section_is_appended_and_a_new_page_gets_a_title(common, tmp_path: Path) -> None:
    fresh = common.replace_section(tmp_path / "serving.md", "load", "table")
    assert fresh == "# Serving\n\n<!-- begin:load -->\ntable\n<!-- end:load -->\n"
    page = tmp_path / "page.md"
    page.write_text("# Page\n\ntext\n")
    appended = common.replace_section(page, "b", "x")
    assert appended == "# Page\n\ntext\n\n<!-- begin:b -->\nx\n<!-- end:b -->\n"
