"""Language-model knowledge: the tiny world and its pretrained model, any Hugging Face causal LM,
Outlandish-format data, keyword probabilities, insertion and resumable sweeps.

Notes: ``../shared/papers/priming.md`` (Sun et al. 2025) and ``fabricated.md`` (Sun et al. 2024).
Modules are imported on demand; ``transformers`` is imported lazily inside functions.
"""
