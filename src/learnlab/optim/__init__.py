"""Optimisation studies and their components.

- :mod:`learnlab.optim.loss_probe`: the fixed-batch loss along the batch's own gradient and its parabola fit;
- :mod:`learnlab.optim.averaging`: two-point averages, debiased EMA and SWA of weights, BatchNorm refresh;
- :mod:`learnlab.optim.nqm`: the noisy quadratic model simulator and its closed-form stationary losses;
- :mod:`learnlab.optim.trajectories`: the study ``trajectories`` (Sandler et al. 2023);
- :mod:`learnlab.optim.combined`: ``CombinedOptimizer``, a learned per-layer combination of base optimizers;
- :mod:`learnlab.optim.evolution`: antithetic-ES meta-training; :mod:`learnlab.optim.population`: a
  vmap-ed training loop over a population of optimizer rules;
- :mod:`learnlab.optim.l3rs`: the study ``l3rs`` (Kristiansen et al. 2024).
"""
