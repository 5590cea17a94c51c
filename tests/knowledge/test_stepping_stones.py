import pytest

from learnlab.core.errors import UserError
from learnlab.knowledge.outlandish import OutlandishSample, build_outlandish, validate_sample, write_jsonl
from learnlab.knowledge.stepping_stones import length_matched_control, load_rewrites, world_lead_in, world_stepping_stone


def test_stepping_stone_keeps_the_original_text_and_is_a_valid_sample(small_world):
    samples, _ = build_outlandish(small_world, seed=0, samples_per_pair=1, probes_per_theme=4)
    rewrite = world_stepping_stone(small_world)
    for sample in samples:
        stone = rewrite(sample)
        assert stone.text.endswith(sample.text) and stone.prefix.endswith(sample.prefix)
        assert stone.keyword == sample.keyword and stone.category == "stepping-stone"
        assert validate_sample(stone.to_record()) is None
        assert stone.extra["rewrite_of"] == sample.id
        # The stepping stones mention the keyword before the original text does.
        assert sample.keyword in stone.text[: len(stone.text) - len(sample.text)]


def test_lead_in_uses_a_known_holder_when_one_exists(small_world):
    theme = small_world.theme("colors")
    holder, attribute = theme.facts[0]
    assert holder in world_lead_in(small_world, "colors", attribute)
    lead = world_lead_in(small_world, "colors", theme.outlandish[0])  # nobody has it: related to common words
    assert theme.attributes[0].capitalize() in lead and theme.outlandish[0] in lead


def test_control_matches_length_and_never_mentions_the_keyword(small_world):
    samples, _ = build_outlandish(small_world, seed=0, samples_per_pair=1, probes_per_theme=4)
    rewrite = world_stepping_stone(small_world)

    def words(text):
        return len(text.split())

    for sample in samples[:10]:
        stone = rewrite(sample)
        control = length_matched_control(sample, stone, words)
        lead = control.text[: len(control.text) - len(sample.text)]
        assert sample.keyword not in lead and control.text.endswith(sample.text)
        assert abs(words(control.text) - words(stone.text)) <= 6  # within about one filler sentence
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
