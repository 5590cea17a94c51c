from transformers import AutoTokenizer, PreTrainedTokenizerFast

from learnlab.knowledge.tokenizer import BOS, load_tokenizer, save_tokenizer


def test_tokenizer_round_trip_and_standard_format(small_tokenizer, small_corpus, tmp_path):
    text = small_corpus.train_texts[0] + " Odd bytes: é, 東京, vermilion!"
    ids = small_tokenizer(text)["input_ids"]
    assert ids[0] == small_tokenizer.bos_token_id and small_tokenizer.convert_ids_to_tokens(ids[0]) == BOS
    assert small_tokenizer.decode(ids, skip_special_tokens=True) == text
    save_tokenizer(small_tokenizer, tmp_path)
    assert (tmp_path / "tokenizer.json").exists() and (tmp_path / "tokenizer_config.json").exists()
    for loaded in (load_tokenizer(tmp_path), AutoTokenizer.from_pretrained(tmp_path, local_files_only=True),
                   PreTrainedTokenizerFast.from_pretrained(tmp_path, local_files_only=True)):
        assert loaded(text)["input_ids"] == ids
        assert loaded.pad_token_id == small_tokenizer.pad_token_id and loaded.eos_token_id == small_tokenizer.eos_token_id


def test_frequent_words_are_single_tokens_and_unseen_words_split(small_tokenizer, small_world):
    common = small_world.themes[0].attributes[0]
    assert len(small_tokenizer.tokenize(" " + common)) == 1
    assert len(small_tokenizer.tokenize(" " + small_world.themes[0].outlandish[0])) > 1
