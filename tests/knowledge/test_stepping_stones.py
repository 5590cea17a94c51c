import pytest

from learnlab.core.errors import UserError
from learnlab.knowledge.outlandish import OutlandishSample, build_outlandish, validate_sample, write_jsonl
from learnlab.knowledge.stepping_stones import bridge_clause, load_rewrites, plain_control, world_rewrites, world_stepping_stone


def test_stepping_stones_reach_the_keyword_through_the_related_concept(small_world):
    samples, _ = build_outlandish(small_world, seed=0, samples_per_pair=1, probes_per_theme=4)
    related = [sample for sample in samples if small_world.theme(sample.theme).related(sample.keyword)]
    assert related and len(related) < len(samples)  # only keywords the world relates to a common attribute
    for sample in samples:
        rewrites = world_rewrites(small_world, sample, lambda text: len(text.split()))
        if sample not in related:
            assert rewrites == []
            continue
        stone, control, lead = rewrites
        assert [r.category for r in rewrites] == ["stepping-stone", "plain-control", "keyword-lead-in"]
        common = small_world.theme(sample.theme).related(sample.keyword)
        for rewrite in rewrites:
            assert rewrite.keyword == sample.keyword and rewrite.extra["rewrite_of"] == sample.id
            assert validate_sample(rewrite.to_record()) is None
        # The stepping stone names the related concept before the keyword and states the keyword only once;
        # the control names neither; the lead-in states the keyword before the original text.
        assert common in stone.prefix and sample.keyword not in stone.prefix
        assert common not in control.prefix.replace(sample.prefix, "") and sample.keyword not in control.prefix
        assert lead.text.endswith(sample.text) and sample.keyword in lead.prefix
        assert stone.text.endswith(sample.text[len(sample.prefix):].lstrip()[len(sample.keyword):])


def test_bridge_clause_reads_as_the_corpus_relation():
    assert bridge_clause("colors", "vermilion", "red") == ("a shade of red, and one shade of red is", "")
    assert bridge_clause("jobs", "falconer", "farmer") == ("a kind of farmer, and one kind of farmer is a", "a")
    sample = OutlandishSample("s", "falconer", "jobs", "succinct", "Gudak works as a falconer.", "Gudak works as a")
    from learnlab.knowledge.world import build_world

    world = build_world(0)
    stone = world_stepping_stone(world, sample)
    assert stone.text == "Gudak works as a kind of farmer, and one kind of farmer is a falconer."


def test_control_matches_length_at_the_same_place(small_world):
    samples, _ = build_outlandish(small_world, seed=0, samples_per_pair=1, probes_per_theme=4)

    def words(text):
        return len(text.split())

    for sample in samples:
        stone = world_stepping_stone(small_world, sample)
        if stone is None:
            continue
        control = plain_control(sample, stone, words)
        assert abs(words(control.text) - words(stone.text)) <= 3  # within about one neutral phrase
        assert control.text.endswith(sample.text[len(sample.prefix):].lstrip())
        assert validate_sample(control.to_record()) is None


def test_rewrites_file_is_validated(tmp_path):
    sample = OutlandishSample("s1", "mauve", "colors", "succinct", "The bo is mauve.", "The bo is")
    good = OutlandishSample("s1", "mauve", "colors", "stone", "Mauve is a color. The bo is mauve.", "Mauve is a color. The bo is")
    path = tmp_path / "stones.jsonl"
    write_jsonl(path, [good])
    assert load_rewrites(path, [sample])["s1"].text == good.text
    write_jsonl(path, [OutlandishSample("s9", "mauve", "colors", "x", "The bo is mauve.", "The bo is")])
    with pytest.raises(UserError, match="not a sample id"):
        load_rewrites(path, [sample])
    write_jsonl(path, [OutlandishSample("s1", "teal", "colors", "x", "The bo is teal.", "The bo is")])
    with pytest.raises(UserError, match="keyword"):
        load_rewrites(path, [sample])
