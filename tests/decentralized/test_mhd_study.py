"""The mhd study: smoke run, resume after a kill, bad input, pinned claims."""

import json

import pytest

from learnlab.cli import main
from learnlab.core.parallel import read_records
from learnlab.core.registry import get_study
from learnlab.core.runs import RunOptions, prepare_run
from learnlab.decentralized import mhd


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    assert main(["run", "mhd", "--preset", "smoke", "--out", str(out), "--quiet"]) == 0
    return out, prepare_run(get_study("mhd"), RunOptions(preset="smoke", out=out)).run_dir


def test_smoke_run_records_every_setting(smoke_run):
    _, run_dir = smoke_run
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "ok"
    assert set(results["figures"]) == {"methods.png", "heads.png", "islands.png"}
    assert [claim["id"] for claim in results["claims"]] == ["M1", "M2", "M3", "M4", "M5"]
    measured = results["measured"]
    assert set(measured["shared_accuracy_by_head"]) == {"isolated", "mhd", "central", "fedavg", "cycle", "complete10",
                                                        "isolated-s1", "chain-s1", "h0-s1"}
    assert len(measured["shared_accuracy_by_head"]["mhd"]) == 1 + 2 and len(measured["shared_accuracy_by_head"]["cycle"]) == 3
    assert measured["runtime_max_weight_difference"] <= 1e-5
    assert {claim["id"]: claim["verdict"] for claim in results["claims"]}["M4"] == "pass"
    assert measured["payload"]["message_bytes"] == 3 * 64 * 10 * 4
    assert len(measured["islands"]) == 2 and all(0 < island["coverage"] < 1 for island in measured["islands"])


def test_killed_run_resumes_without_redoing_finished_federations(smoke_run):
    out, run_dir = smoke_run
    merged = run_dir / "items" / "federations.jsonl"
    before = read_records(merged)
    lines = merged.read_text().splitlines()
    (run_dir / "items" / "federations.part0-of1.jsonl").write_text("\n".join(lines[:4]) + "\n" + lines[4][:25])
    merged.unlink()
    for name in ("results.json", "stages/federations.json", "stages/runtimes.json"):
        (run_dir / name).unlink()
    assert main(["run", "mhd", "--preset", "smoke", "--out", str(out), "--quiet"]) == 0
    after = read_records(merged)
    assert [record["id"] for record in after] == [record["id"] for record in before]
    assert after == before  # the federations redone give the same numbers


@pytest.mark.parametrize("argv, message", [
    (["--set", "graph=star"], "star"),
    (["--set", "agents=12"], "12 agents but 10 classes"),
    (["--set", "nu=-1"], "nu, nu0 and nu0_recovery must be >= 0"),
    (["--set", "backbones=huge"], "unknown backbone 'huge'"),
    (["--set", "graph=edges", "--set", "edges=0-9"], "not between two different agents"),
])
def test_bad_input_exits_2_with_one_line(argv, message, tmp_path, capsys):
    assert main(["run", "mhd", "--preset", "smoke", "--out", str(tmp_path), "--quiet", *argv]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and message in error


def test_claim_thresholds_are_pinned():
    assert (mhd.GAP_FRACTION, mhd.PRIVATE_TOLERANCE, mhd.SATURATION) == (0.5, 0.02, 0.02)
    assert (mhd.FAILURE_MARGIN, mhd.CENTRAL_TOLERANCE, mhd.COVERAGE_TOLERANCE) == (0.10, 0.05, 0.05)
    checks = {claim.id: [check.describe() for check in claim.checks] for claim in mhd.CLAIMS}
    assert checks["M1"] == ["gap_closed_fraction >= 0.5", "private_h0_minus_isolated >= -0.02"]
    assert checks["M4"] == ["runtime_max_weight_difference <= 1e-05"]
    quick = get_study("mhd").config("quick")
    assert (quick.agents, quick.skew, quick.cycle_agents, quick.seeds) == (5, 0.9, 10, (0, 1, 2))
