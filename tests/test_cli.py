import subprocess
import sys
from pathlib import Path

import pytest

from learnlab.cli import main

ROOT = Path(__file__).resolve().parents[1]


def exit_code(argv):
    try:
        return main(argv)
    except SystemExit as stop:
        return stop.code


@pytest.mark.parametrize(
    "argv, message",
    [
        (["run", "nope"], "unknown study 'nope'; valid studies: "),
        (["run", "icl-gd", "--preset", "huge"], "unknown preset 'huge'; valid presets: smoke, quick, full"),
        (["run", "icl-gd", "--set", "colour=red"], "unknown config key 'colour'; valid keys: dim, num_context"),
        (["run", "icl-gd", "--set", "batch_size=many"], "--set batch_size: expected an integer, got 'many'"),
        (["run", "icl-gd", "--set", "learning_rate=-1"], "learning_rate must be > 0"),
        (["run", "icl-gd", "--set", "ood_scales=1,x"], "--set ood_scales: expected a number, got 'x'"),
        (["run", "icl-gd", "--device", "tpu"], "unknown device 'tpu'"),
        (["run", "icl-gd", "--seed", "-3"], "--seed must be >= 0"),
        (["run", "icl-gd", "--seed", "x"], "argument --seed: invalid int value"),
        (["reproduce", "--only", "icl-gd,nope"], "unknown study 'nope'"),
        (["report", "/nonexistent/runs"], "runs directory /nonexistent/runs does not exist"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(argv, message, capsys, tmp_path):
    assert exit_code(argv) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("learnlab: error: ")
    assert message in error
    assert not any(tmp_path.iterdir())


def test_unwritable_out_is_one_line_and_exit_code_2(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = subprocess.run(
        [sys.executable, "-m", "learnlab.cli", "run", "icl-gd", "--preset", "smoke", "--out", str(blocker / "runs")],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("learnlab: error: cannot write to") and result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr


def test_list_shows_studies_papers_and_claims(capsys):
    assert main(["list", "--verbose"]) == 0
    out = capsys.readouterr().out
    assert "icl-gd" in out and "arXiv:2212.07677" in out
    assert "C1:" in out and "C5:" in out and "test: |gd1_loss / 0.2062 - 1| <= 0.02" in out
