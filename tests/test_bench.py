"""The benchmarks start as bench/run_all.sh starts them: `python bench/NAME.py` from the repository root puts
bench/ (not the root) on the import path, so an import that works from a test or an interpreter in the root can
still stop the whole run at that script, after the minutes the ones before it took."""
import re
import subprocess
import sys

import pytest

from conftest import ROOT

RUN_ALL = ROOT / "bench" / "run_all.sh"
SCRIPTS = re.findall(r"python (bench/\w+\.py) --model", RUN_ALL.read_text())


def test_run_all_lists_the_benchmarks_it_runs():
    assert len(SCRIPTS) >= 7, SCRIPTS
    assert all((ROOT / script).is_file() for script in SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS)
def test_each_benchmark_imports_as_run_all_runs_it(script):
    """--help stops after the imports and the argument parser, before any model is loaded or timed."""
    done = subprocess.run([sys.executable, script, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "--model" in done.stdout
