import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from learnlab.core.errors import UserError
from learnlab.core.report import write_report
from learnlab.core.runs import RunOptions, execute, prepare_run
from tests.core.toy_study import HANG_VARIABLE, STUDY

ROOT = Path(__file__).resolve().parents[2]


def options(tmp_path, **changes):
    return RunOptions(**{"preset": "smoke", "out": tmp_path, "quiet": True, **changes})


def test_run_writes_directory_and_verdicts(tmp_path):
    results = execute(STUDY, options(tmp_path))
    run_dir = prepare_run(STUDY, options(tmp_path)).run_dir
    assert run_dir.parent == tmp_path / "toy" and run_dir.name.startswith("smoke-seed0-")
    for name in ("config.json", "metrics.jsonl", "results.json", "figures/draws.png"):
        assert (run_dir / name).exists(), name
    assert [c["verdict"] for c in results["claims"]] == ["pass", "fail", "not-run"]
    assert results["verdicts"] == {"pass": 1, "fail": 1, "not-run": 1}
    assert json.loads((run_dir / "results.json").read_text())["measured"] == results["measured"]
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 5


def test_same_config_is_reused_and_force_recomputes(tmp_path):
    first = execute(STUDY, options(tmp_path))
    again = execute(STUDY, options(tmp_path))
    assert not first["reused"] and again["reused"]
    assert again["finished_at"] == first["finished_at"]
    forced = execute(STUDY, options(tmp_path, force=True))
    assert not forced["reused"]
    other = execute(STUDY, options(tmp_path, overrides=("steps=6",)))
    assert not other["reused"]


def test_same_seed_gives_same_numbers_and_other_seed_differs(tmp_path):
    a = execute(STUDY, options(tmp_path / "a"))
    b = execute(STUDY, options(tmp_path / "b"))
    c = execute(STUDY, options(tmp_path / "c", seed=1))
    assert a["measured"] == b["measured"] and a["claims"] == b["claims"]
    assert a["measured"] != c["measured"]


def test_divergence_is_recorded_as_failed_and_rerun(tmp_path):
    results = execute(STUDY, options(tmp_path, overrides=("diverge=true",)))
    assert results["status"] == "failed" and "toy loss became nan" in results["reason"]
    assert all(c["verdict"] == "not-run" for c in results["claims"])
    assert not execute(STUDY, options(tmp_path, overrides=("diverge=true",)))["reused"]


def test_unwritable_out_is_a_user_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(UserError, match="cannot write to"):
        execute(STUDY, options(blocker / "sub"))


def test_killed_run_leaves_no_results_and_resumes(tmp_path):
    script = (
        "from pathlib import Path; from learnlab.core.runs import RunOptions, execute; "
        "from tests.core.toy_study import STUDY; "
        f"execute(STUDY, RunOptions(preset='smoke', out=Path({str(tmp_path)!r}), quiet=True))"
    )
    env = {**os.environ, HANG_VARIABLE: "1", "PYTHONPATH": f"{ROOT / 'src'}:{ROOT}"}
    process = subprocess.Popen([sys.executable, "-c", script], env=env, cwd=ROOT)
    run_dir = prepare_run(STUDY, options(tmp_path)).run_dir
    deadline = time.time() + 60
    while not (run_dir / "stages" / "first.json").exists() and time.time() < deadline:
        time.sleep(0.05)
    process.kill()
    process.wait()
    assert (run_dir / "stages" / "first.json").exists()
    assert not (run_dir / "results.json").exists()
    first_stage = (run_dir / "stages" / "first.json").stat().st_mtime_ns
    resumed = execute(STUDY, options(tmp_path))
    assert resumed["status"] == "ok" and not resumed["reused"]
    assert (run_dir / "stages" / "first.json").stat().st_mtime_ns == first_stage
    assert resumed["measured"] == execute(STUDY, options(tmp_path / "fresh"))["measured"]
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 5


def test_report_tables_every_claim_and_embeds_figures(tmp_path):
    execute(STUDY, options(tmp_path))
    execute(STUDY, options(tmp_path, overrides=("diverge=true",), preset="quick"))
    html_path, markdown_path = write_report(tmp_path, {"toy": STUDY})
    markdown = markdown_path.read_text()
    # one summary row per run, then one row per claim
    assert markdown.count("| toy | smoke |") == 1 + 3 and markdown.count("| toy | quick |") == 1 + 3
    assert "| toy | quick | 0 | 0 | 3 |" in markdown  # the failed run: every claim not run
    assert "**PASS**" in markdown and "**FAIL**" in markdown and "**NOT RUN**" in markdown
    assert "figures/draws.png" in markdown and "status **failed**: toy loss became nan" in markdown
    page = html_path.read_text()
    assert "data:image/png;base64," in page and "src=\"figures" not in page
