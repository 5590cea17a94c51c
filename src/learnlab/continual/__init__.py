"""Continual few-shot learning: HyperTransformer (Zhmoginov et al. 2022) and Continual HyperTransformer
(Vladymyrov et al. 2024).

- :mod:`learnlab.continual.episodes`: N-way K-shot episodes and task sequences (novel classes or
  mini-batches of one task) from a class-image pool (:mod:`learnlab.data.glyphs`,
  :mod:`learnlab.data.image_classes`);
- :mod:`learnlab.continual.target_cnn`: the target CNN and its weights in token-slice layout;
- :mod:`learnlab.continual.hypertransformer`: the HyperTransformer, its continual recursion, and the
  same CNN with trained weights (ProtoNet);
- :mod:`learnlab.continual.learning`: losses and scenario evaluations (task-/class-incremental,
  mini-batches, MergedHT, fine-tuning);
- :mod:`learnlab.continual.metrics`: forgetting and backward transfer with Avalanche's definitions;
- :mod:`learnlab.continual.meta_training`: resumable episodic meta-training;
- :mod:`learnlab.continual.continual_ht`: the study.
"""
