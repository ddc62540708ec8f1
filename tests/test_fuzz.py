"""Fuzzing (tests/fuzzing.py): damaged and hostile configs, IDX files, pictures and checkpoint
archives each end in a result or a one-line error, within a time limit, in under 1 GiB of
memory.

`BRIEF` cases of each kind run here (seed `SEED`); XPNN_LONG_TESTS=1 runs `LONG` of each (4,000
in all), and XPNN_FUZZ_SEED=N another seed's cases. A failing case's file is kept, and named.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import fuzzing
from xpnn.cli import cli

REPO = Path(__file__).resolve().parent.parent
SEED = int(os.environ.get("XPNN_FUZZ_SEED", "2026"))
BRIEF, LONG = 100, 1000
COUNT = LONG if os.environ.get("XPNN_LONG_TESTS") == "1" else BRIEF


@pytest.mark.parametrize("kind", fuzzing.KINDS)
def test_fuzzed_input_ends_in_a_result_or_one_line(kind, tmp_path):
    done = subprocess.run([sys.executable, str(REPO / "tests" / "fuzzing.py"), kind, str(SEED),
                           "0", str(COUNT), str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=120 + 5 * COUNT,
                          env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
    lines = done.stdout.splitlines()
    failures = [json.loads(line) for line in lines if line.startswith("{")]
    report = "\n\n".join(f"case {f['case']} ({f['file']}):\n{f['problem']}" for f in failures[:5])
    assert not failures, f"{len(failures)} of {COUNT} {kind} cases failed:\n{report}"
    assert "Warning" not in done.stderr, done.stderr[-3000:]  # nothing raw from a library
    assert done.returncode == 0 and lines and lines[-1] == f"done {COUNT} 0", \
        f"the worker died (exit {done.returncode}) after:\n{done.stdout[-2000:]}\n" \
        f"{done.stderr[-3000:]}"


def test_fuzzed_configs_through_the_command_line_are_one_line_errors(tmp_path):
    """A sample of the config cases through `xpnn describe`: one line, no traceback."""
    import numpy
    for case in range(0, COUNT, 4):
        rng = numpy.random.default_rng([SEED, fuzzing.KINDS.index("config"), case])
        path = fuzzing.config_case(rng, tmp_path)
        result = CliRunner().invoke(cli, ["describe", "-c", str(path)], prog_name="xpnn")
        if result.exit_code == 0:
            continue
        assert result.exit_code == 1 and not isinstance(result.exception, Exception) or \
            isinstance(result.exception, SystemExit), (case, result.output, result.exception)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: "), (case, result.stderr[:3000])
        assert len(lines[0]) <= 1100
