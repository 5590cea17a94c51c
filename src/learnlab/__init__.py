"""learnlab: a lab for how neural networks learn.

Each study turns a paper's headline claims into measured numbers with a verdict. Components
(layers, task generators, baselines) are plain PyTorch and usable on their own; the study machinery
lives in :mod:`learnlab.core` and the command line in :mod:`learnlab.cli`.
"""

__version__ = "0.1.0"
