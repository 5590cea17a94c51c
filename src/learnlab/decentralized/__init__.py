"""Decentralized learning with multi-headed distillation (Zhmoginov et al., CVPR 2023).

- :mod:`learnlab.decentralized.partitions`: owner-probability skew and Dirichlet splits;
- :mod:`learnlab.decentralized.graphs`: complete, cycle, random-regular, islands, edge lists;
- :mod:`learnlab.decentralized.agents`: a backbone with a main head and auxiliary heads;
- :mod:`learnlab.decentralized.distillation`: the private and distillation losses, aggregation;
- :mod:`learnlab.decentralized.federation`: the agent code path shared by both runtimes;
- :mod:`learnlab.decentralized.simulation`: every agent in one process;
- :mod:`learnlab.decentralized.distributed`: one process per agent over ``torch.distributed``;
- :mod:`learnlab.decentralized.mhd`: the study.
"""
