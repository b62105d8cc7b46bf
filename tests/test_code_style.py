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
