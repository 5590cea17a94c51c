import json

import pytest

from learnlab.core.errors import UserError
from learnlab.knowledge.outlandish import (
    CATEGORIES,
    PRIOR_LEVELS,
    build_outlandish,
    load_probes,
    load_samples,
    probe_prefixes,
    world_keywords,
    write_jsonl,
)
from learnlab.knowledge.world import build_world


@pytest.fixture(scope="module")
def builtin():
    world = build_world(0)
    return world, *build_outlandish(world, seed=0)


def test_builtin_set_shape(builtin):
    world, samples, probes = builtin
    keywords = world_keywords(world)
    assert sum(len(levels) for levels in keywords.values()) == 24 and all(list(levels) == list(PRIOR_LEVELS) for levels in keywords.values())
    assert {s.keyword for s in samples} == {k for levels in keywords.values() for k in levels.values()}
    assert set(CATEGORIES) >= {"conflicting", "succinct", "narrative", "mundane", "jumbled", "novel"}
    for keyword in {s.keyword for s in samples}:
        for category in CATEGORIES:
            assert sum(s.keyword == keyword and s.category == category for s in samples) >= 3
    for sample in samples:
        assert sample.text.startswith(sample.prefix) and sample.text[len(sample.prefix):].lstrip().startswith(sample.keyword)
        theme = world.theme(sample.theme)
        if sample.category == "conflicting" and sample.keyword in theme.attributes:
            assert theme.attribute_of(sample.extra["subject"]) != sample.keyword
        if sample.category == "mundane" and sample.keyword in theme.attributes:
            assert theme.attribute_of(sample.extra["subject"]) == sample.keyword
        if sample.category == "novel":
            assert sample.extra["subject"] not in theme.subjects  # never seen in the corpus
    sample_subjects = {s.extra["subject"] for s in samples}
    for theme in world.themes:
        same = probe_prefixes(probes, theme.name)
        assert len(same) >= 10
        assert not any(word.strip("?,.:") in sample_subjects for prefix in same for word in prefix.split())
        assert len(probe_prefixes(probes, theme.name, cross=True)) == len(probes) - len(same)
    assert build_outlandish(world, seed=0) == (samples, probes)


def test_write_and_load_round_trip(builtin, tmp_path):
    _, samples, probes = builtin
    write_jsonl(tmp_path / "s.jsonl", samples)
    write_jsonl(tmp_path / "p.jsonl", probes)
    assert load_samples(tmp_path / "s.jsonl") == samples
    assert load_probes(tmp_path / "p.jsonl") == probes


GOOD = {"id": "x", "keyword": "mauve", "theme": "colors", "category": "conflicting", "text": "The sky is mauve.",
        "prefix": "The sky is"}


@pytest.mark.parametrize(
    "bad, message",
    [
        ("{not json", "not valid JSON"),
        (json.dumps([1, 2]), "expected a JSON object"),
        (json.dumps({k: v for k, v in GOOD.items() if k != "keyword"}), "missing field 'keyword'"),
        (json.dumps({**GOOD, "text": 3}), "field 'text' must be a string"),
        (json.dumps({**GOOD, "prefix": "The sea is"}), "text does not start with prefix"),
        (json.dumps({**GOOD, "keyword": "teal"}), "keyword 'teal' does not follow the prefix"),
        (json.dumps(GOOD), "duplicate id 'x'"),
    ],
)
def test_loader_reports_file_and_line(tmp_path, bad, message):
    path = tmp_path / "samples.jsonl"
    path.write_text(json.dumps(GOOD) + "\n\n" + bad + "\n")
    with pytest.raises(UserError) as error:
        load_samples(path)
    assert str(error.value).startswith(f"{path}:3: ") and message in str(error.value)
    assert "\n" not in str(error.value)


def test_missing_file_and_bad_probe(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_samples(tmp_path / "nope.jsonl")
    path = tmp_path / "probes.jsonl"
    path.write_text(json.dumps({"id": "p", "theme": "colors"}) + "\n")
    with pytest.raises(UserError, match=f"{path}:1: missing field 'prefix'"):
        load_probes(path)
