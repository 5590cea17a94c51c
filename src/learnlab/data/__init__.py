"""Datasets and small models shared by several research areas.

- :mod:`learnlab.data.splits`: the :class:`ClassificationData` container, deterministic
  train/validation/test splits and symmetric label noise;
- :mod:`learnlab.data.offline`: datasets that need no download (MNIST-1D generated locally by the
  ``mnist1d`` package, scikit-learn's 8x8 digits);
- :mod:`learnlab.data.image_files`: MNIST, Fashion-MNIST and CIFAR-10 read from a local directory
  in torchvision's on-disk layout, with numpy only;
- :mod:`learnlab.data.models`: MLP, small CNN and small ResNet (with or without BatchNorm) for
  1-D and 2-D inputs;
- :mod:`learnlab.data.training`: a minimal in-memory SGD training loop.

Nothing is imported or computed here at import time beyond this docstring; import the submodules.
"""
