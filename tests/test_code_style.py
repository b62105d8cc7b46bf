import re
import subprocess
import sys

from conftest import ROOT

PATHS = ["src", "tests", "benchmarks", "scripts"]


def test_ruff_check_and_format_report_nothing():
    for command in (["check"], ["format", "--check"]):
        result = subprocess.run(
            [sys.executable, "-m", "ruff", *command, *PATHS], cwd=ROOT, capture_output=True, text=True
        )
        assert result.returncode == 0, result.stdout + result.stderr


def heading_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_links_into_the_benchmarks_page_name_headings_it_has():
    """The page's note titles gain their numbers when it is generated ("[note 26]"): a link written from a note's own
    title led nowhere."""
    page = (ROOT / "docs" / "benchmarks.md").read_text()
    anchors = {heading_anchor(line.lstrip("#")) for line in page.splitlines() if line.startswith("#")}
    for document in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]:
        for link in re.findall(r"benchmarks\.md#([\w\-]+)", document.read_text()):
            assert link in anchors, f"{document.name}: #{link}"
