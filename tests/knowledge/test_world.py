from learnlab.knowledge.corpus import FACT_TEMPLATES, build_corpus, fill
from learnlab.knowledge.world import THEMES, World, build_world, zipf_counts


def test_world_is_deterministic_by_seed_and_round_trips():
    first, again, other = build_world(3), build_world(3), build_world(4)
    assert first == again and first != other
    assert World.from_dict(first.to_dict()) == first
    assert [theme.name for theme in first.themes] == list(THEMES) and len(THEMES) >= 4


def test_world_shape_and_zipf_frequencies():
    world = build_world(0, subjects_per_theme=60)
    subjects = [s for theme in world.themes for s in theme.subjects]
    assert len(subjects) == len(set(subjects)) == 240  # unique across themes
    for theme in world.themes:
        counts = list(theme.attribute_counts().values())
        assert len(theme.subjects) >= 50 and sum(counts) == 60
        assert counts == sorted(counts, reverse=True) and min(counts) >= 1 and counts[0] >= 5 * counts[-1]
        assert not set(theme.outlandish) & set(theme.attributes)
    assert zipf_counts(10, 4, 1.0) == sorted(zipf_counts(10, 4, 1.0), reverse=True)


def test_corpus_is_deterministic_and_withholds_heldout_pairs(small_world, small_corpus):
    again = build_corpus(small_world, seed=7, train_documents=300, heldout_documents=20)
    assert again == small_corpus
    training = " ".join(small_corpus.train_texts)
    lowered = training.lower()
    for prompt in small_corpus.heldout_prompts:
        template = FACT_TEMPLATES[prompt.theme][prompt.template]
        sentence = fill(template, prompt.subject, prompt.attribute)
        assert sentence.startswith(prompt.prompt + " " + prompt.attribute)
        # The withheld pair is never stated in training, not even its "<subject> <connector> <attribute>" core.
        core = template[template.index("{s}"):-1].format(s=prompt.subject, a=prompt.attribute).lower()
        assert core not in lowered, core
        assert (prompt.subject, prompt.template) in small_corpus.heldout_pairs
    for prompt in small_corpus.train_prompts:
        assert (prompt.subject, prompt.template) not in small_corpus.heldout_pairs
    # Every subject has two withheld templates, and its fact appears in training in other words.
    assert len(small_corpus.heldout_prompts) == 2 * len(small_world.facts())
    kinds = ("Q: ", "Everyone knows", "Yesterday", " and ")
    assert all(kind in training for kind in kinds)


def test_no_heldout_sentence_appears_in_training(small_corpus):
    def sentences(texts):
        return {sentence for text in texts for sentence in text.replace(". ", ".\n").splitlines()}

    heldout, training = sentences(small_corpus.heldout_texts), sentences(small_corpus.train_texts)
    assert len(heldout) > 50
    assert not heldout & training, sorted(heldout & training)[:5]
