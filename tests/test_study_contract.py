"""The study contract (DESIGN.md), checked over every registered study.

Every preset builds a valid config; the smoke preset runs, evaluates every claim (each metric a
claim reads is measured: the verdict is pass or fail, never not-run) and saves every declared
figure. A new area package with one study file is found and run without an edit of ``core/``.
"""

import textwrap

import pytest

import learnlab
from learnlab.cli import main
from learnlab.core import StudyConfig
from learnlab.core.registry import PRESETS, discover_modules, load_studies
from learnlab.core.runs import RunOptions, execute, prepare_run

STUDIES = load_studies()


@pytest.fixture(scope="session")
def smoke_out(tmp_path_factory):
    """One runs directory for every smoke run of the session (a study that uses another reuses its run)."""
    return tmp_path_factory.mktemp("smoke-runs")


@pytest.mark.parametrize("name", list(STUDIES))
def test_every_preset_builds_a_valid_config(name):
    study = STUDIES[name]
    configs = {preset: study.config(preset) for preset in PRESETS}
    assert all(isinstance(config, StudyConfig) for config in configs.values())
    assert len({type(config) for config in configs.values()}) == 1
    assert configs["smoke"] != configs["quick"]
    for preset in PRESETS:
        assert prepare_run(study, RunOptions(preset=preset)).run_dir.name.startswith(f"{preset}-seed0-")


@pytest.mark.parametrize("name", list(STUDIES))
def test_smoke_run_measures_every_claim_and_saves_every_figure(name, smoke_out):
    study = STUDIES[name]
    results = execute(study, RunOptions(preset="smoke", out=smoke_out, quiet=True))
    assert results["status"] == "ok", results["reason"]
    unmeasured = {claim["id"]: [metric for metric, value in claim["measured"].items() if value is None]
                  for claim in results["claims"] if claim["verdict"] == "not-run"}
    assert not unmeasured, f"claims whose metrics the smoke run does not measure: {unmeasured}"
    assert study.figures, "a study declares the figures it saves"
    assert {f"{figure}.png" for figure in study.figures} <= set(results["figures"])
    run_dir = prepare_run(study, RunOptions(preset="smoke", out=smoke_out)).run_dir
    for figure in study.figures:
        assert (run_dir / "figures" / f"{figure}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


RECIPE = '''
"""A toy study in a new area package: one file, no edit of learnlab.core."""

from dataclasses import dataclass

from learnlab.core import Claim, Study, StudyConfig, at_most, positive
from learnlab.core.io import pyplot


@dataclass(frozen=True)
class Config(StudyConfig):
    draws: int = positive(8)


def run(config, ctx):
    import torch

    values = torch.rand(config.draws, generator=ctx.generator("values"))
    figure, axis = pyplot().subplots()
    axis.plot(values.numpy())
    ctx.save_figure(figure, "values")
    return {"mean": float(values.mean())}


STUDY = Study(
    name="toy-recipe",
    title="A toy recipe",
    paper="Nobody (2026)",
    presets={"smoke": Config(draws=4), "quick": Config(), "full": Config(draws=100)},
    run=run,
    claims=(Claim("T1", "the mean of uniform draws is at most 1", "none", "<= 1", (at_most("mean", 1.0),)),),
    figures=("values",),
)
'''


def test_a_new_area_package_adds_a_study_with_one_file(tmp_path, monkeypatch, capsys):
    area = tmp_path / "extension" / "toyarea"
    area.mkdir(parents=True)
    (area / "toy_recipe.py").write_text(textwrap.dedent(RECIPE))
    monkeypatch.setattr(learnlab, "__path__", [*learnlab.__path__, str(tmp_path / "extension")])
    assert "learnlab.toyarea.toy_recipe" in discover_modules()
    assert "toy-recipe" in load_studies()
    assert main(["run", "toy-recipe", "--preset", "smoke", "--out", str(tmp_path / "runs"), "--quiet"]) == 0
    assert "T1" in capsys.readouterr().out
    assert main(["list"]) == 0 and "toy-recipe" in capsys.readouterr().out


def test_studies_come_after_the_studies_they_require():
    order = list(STUDIES)
    for name, study in STUDIES.items():
        assert all(order.index(required) < order.index(name) for required in study.requires)
    assert "world" in STUDIES["priming"].requires
