"""The reproduce scheduler: dependency order, resume after a kill, torchrun ranks, the report's summary,
stale flags and embedded figures."""

import base64
import dataclasses
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from learnlab.cli import main
from learnlab.core.registry import load_studies
from learnlab.core.report import write_report
from learnlab.core.runs import RunOptions, prepare_run
from learnlab.core.scheduler import DEFAULT_EXPECTED_SECONDS, DONE, REUSED, Schedule, deal_to_ranks, expected_seconds

STUDIES = load_studies()


def _reproduce(*args: str) -> list[str]:
    return [sys.executable, "-m", "learnlab", "reproduce", "--preset", "smoke", "--quiet", *args]


def test_a_study_starts_after_the_studies_it_requires(tmp_path):
    options = RunOptions(preset="smoke", out=tmp_path, quiet=True)
    schedule = Schedule.plan([STUDIES["priming"], STUDIES["world"], STUDIES["icl-gd"]], options, jobs=2)
    tasks = {task.name: task for task in schedule.run()}
    assert tasks["world"].slots == 1 and tasks["icl-gd"].slots == 1  # one process, one thread each
    assert all(task.state == DONE for task in tasks.values())
    assert tasks["priming"].started >= tasks["world"].finished  # world's model first
    assert tasks["icl-gd"].started < tasks["world"].finished  # an independent study runs beside it (2 slots)
    again = Schedule.plan([STUDIES["world"], STUDIES["icl-gd"]], options, jobs=2).run()
    assert [task.state for task in again] == [REUSED, REUSED]  # finished studies start no process
    assert again[0].expected == pytest.approx(tasks["world"].results["run_seconds"])


def test_expected_time_is_the_reference_time_until_a_run_is_recorded(tmp_path):
    study = dataclasses.replace(STUDIES["icl-gd"], reference_seconds={"quick": 42.0})
    assert expected_seconds(study, RunOptions(preset="quick", out=tmp_path)) == 42.0
    assert expected_seconds(study, RunOptions(preset="smoke", out=tmp_path)) == DEFAULT_EXPECTED_SECONDS
    assert all(study.reference_seconds.get("quick", 0) > 0 for study in STUDIES.values())  # make run's first order


def test_killed_scheduler_resumes_reusing_finished_studies(tmp_path):
    out = tmp_path / "runs"
    first, second = STUDIES["icl-gd"], STUDIES["noisy-icl"]
    results = {study.name: prepare_run(study, RunOptions(preset="smoke", out=out)).run_dir / "results.json"
               for study in (first, second)}
    process = subprocess.Popen(_reproduce("--only", "icl-gd,noisy-icl", "--jobs", "1", "--out", str(out)))
    deadline = time.time() + 120
    while not results["icl-gd"].exists() and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)  # noisy-icl is running now
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) != 0
    assert results["icl-gd"].exists() and not results["noisy-icl"].exists()
    finished_at = json.loads(results["icl-gd"].read_text())["finished_at"]
    assert subprocess.run(_reproduce("--only", "icl-gd,noisy-icl", "--jobs", "1", "--out", str(out))).returncode == 0
    assert json.loads(results["icl-gd"].read_text())["finished_at"] == finished_at  # reused, not rerun
    assert json.loads(results["noisy-icl"].read_text())["status"] == "ok"


def _claim_rows(report: Path) -> list[str]:
    return [line for line in report.read_text().splitlines() if "**PASS**" in line or "**FAIL**" in line]


def test_two_torchrun_ranks_write_the_same_report_as_one_process(tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    single, ranked = tmp_path / "single", tmp_path / "ranked"
    assert subprocess.run(_reproduce("--only", "icl-gd,mesa", "--out", str(single))).returncode == 0
    command = [str(torchrun), "--nproc-per-node", "2", "-m", "learnlab", "reproduce", "--preset", "smoke", "--quiet",
               "--only", "icl-gd,mesa", "--out", str(ranked)]
    assert subprocess.run(command, env={**os.environ, "OMP_NUM_THREADS": "1"}).returncode == 0
    assert _claim_rows(ranked / "REPORT.md") == _claim_rows(single / "REPORT.md")
    assert len(_claim_rows(single / "REPORT.md")) == len(STUDIES["icl-gd"].claims) + len(STUDIES["mesa"].claims)


def test_deal_to_ranks_balances_expected_time():
    class Fake:
        def __init__(self, name, expected):
            self.name, self.expected = name, expected

    dealt = deal_to_ranks([Fake("a", 10), Fake("b", 6), Fake("c", 5), Fake("d", 1)], 2)
    assert dealt == [["a", "d"], ["b", "c"]]


def test_report_summary_stale_flag_and_embedded_figures(tmp_path):
    assert main(["run", "icl-gd", "--preset", "smoke", "--out", str(tmp_path), "--quiet"]) == 0
    html_path, markdown_path = write_report(tmp_path, STUDIES, wall_seconds=12.0)
    markdown = markdown_path.read_text()
    assert re.search(r"\*\*\d+ claims pass, \d+ fail, 0 not run\*\* over 1 runs", markdown)
    assert "this reproduce: 12 s wall" in markdown and "| icl-gd | smoke |" in markdown and "STALE" not in markdown
    page = html_path.read_text()
    images = re.findall(r'<img src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == len(STUDIES["icl-gd"].figures)
    from PIL import Image

    for data in images:
        Image.open(io.BytesIO(base64.b64decode(data))).verify()  # every embedded figure decodes
    # a result made by other code is flagged, in the summary and at the study
    results_path = prepare_run(STUDIES["icl-gd"], RunOptions(preset="smoke", out=tmp_path)).run_dir / "results.json"
    results = json.loads(results_path.read_text())
    results["code_version"] = "other-code"
    results_path.write_text(json.dumps(results))
    html_path, markdown_path = write_report(tmp_path, STUDIES)
    assert "ok (STALE)" in markdown_path.read_text() and "STALE" in html_path.read_text()
    stale_schedule = Schedule.plan([STUDIES["icl-gd"]], RunOptions(preset="smoke", out=tmp_path, quiet=True), jobs=1)
    assert stale_schedule.run()[0].state == DONE  # not reused: rerun by the current code


def test_reproduce_rejects_unknown_studies_and_jobs(tmp_path, capsys):
    assert main(["reproduce", "--preset", "smoke", "--only", "nope", "--out", str(tmp_path)]) == 2
    assert "unknown study 'nope' in --only" in capsys.readouterr().err
    assert main(["reproduce", "--preset", "smoke", "--skip", "icl-gd,nope", "--out", str(tmp_path)]) == 2
    assert main(["reproduce", "--preset", "smoke", "--jobs", "0", "--out", str(tmp_path)]) == 2


def test_readme_verdict_table_is_generated_from_the_runs(tmp_path, capsys):
    assert main(["run", "icl-gd", "--preset", "smoke", "--out", str(tmp_path / "runs"), "--quiet"]) == 0
    readme = tmp_path / "README.md"
    from learnlab.core.report import README_END, README_START

    readme.write_text(f"# title\n\n{README_START}\nold table\n{README_END}\n\nmore text\n")
    assert main(["report", str(tmp_path / "runs"), "--readme", str(readme)]) == 0
    assert "not run yet" in readme.read_text()  # the table reads quick runs; this one is smoke
    from learnlab.core.report import update_readme

    update_readme(readme, tmp_path / "runs", STUDIES, preset="smoke")
    text = readme.read_text()
    row = next(line for line in text.splitlines() if line.startswith("| `icl-gd` |"))
    results = json.loads(next((tmp_path / "runs" / "icl-gd").glob("*/results.json")).read_text())
    passed = sum(claim["verdict"] == "pass" for claim in results["claims"])
    assert f"{passed} pass" in row and "`learnlab.incontext`" in row
    assert "old table" not in text and text.endswith("more text\n") and text.count(README_START) == 1
    (tmp_path / "plain.md").write_text("no markers\n")
    assert main(["report", str(tmp_path / "runs"), "--readme", str(tmp_path / "plain.md")]) == 2


def test_studies_that_others_need_go_first(tmp_path):
    options = RunOptions(preset="smoke", out=tmp_path, quiet=True)
    schedule = Schedule.plan([STUDIES["icl-gd"], STUDIES["world"], STUDIES["priming"]], options, jobs=1)
    for task in schedule.tasks:
        task.expected = 100.0
    assert schedule.critical_path("world") == 200.0 and schedule.critical_path("icl-gd") == 100.0
    assert [task.name for task in schedule._ready()] == ["world", "icl-gd"]  # priming waits for world


@pytest.mark.parametrize("busy", [False, True])
def test_the_next_study_starts_in_slots_the_running_one_leaves_idle(tmp_path, monkeypatch, busy):
    """Two studies of two slots each on two slots: the second starts beside the first only while the
    first leaves its slots idle (here: sleeping), not while it keeps both cores busy."""
    from learnlab.core import scheduler

    work = ("import os, time\nos.fork()\nstart = time.time()\nwhile time.time() - start < 4: pass" if busy
            else "import time; time.sleep(4)")
    commands = {"mhd": [sys.executable, "-c", work], "l3rs": [sys.executable, "-c", "pass"]}
    monkeypatch.setattr(scheduler, "run_command", lambda study, options, threads=None: commands[study.name])
    schedule = Schedule.plan([STUDIES["mhd"], STUDIES["l3rs"]], RunOptions(preset="smoke", out=tmp_path), jobs=2)
    schedule.spare_window = 1.0
    for task in schedule.tasks:
        task.slots = 2
    first, second = schedule.run(poll=0.1)
    if busy:
        assert second.started >= first.finished
    else:
        assert second.started < first.finished - 1.5
