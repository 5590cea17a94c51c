"""Language-model knowledge: the tiny world and its pretrained model, any Hugging Face causal LM,
Outlandish-format data, keyword probabilities, insertion, ignore-k and stepping stones, for
Sun et al. 2025 ("How new data permeates LLM knowledge and how to dilute it") and Sun et al. 2024
("Learning and unlearning of fabricated knowledge in language models").
Modules are imported on demand; ``transformers`` is imported lazily inside functions.
"""
