"""In-context compression of long contexts for decoder language models: gisting (Mu et al. 2023),
average pooling of keys and values, and GistPool (Petrov et al. 2025), on any Hugging Face decoder.
Modules are imported on demand; ``transformers`` is imported lazily inside functions.
"""
