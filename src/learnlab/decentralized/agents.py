"""Agents of multi-headed distillation: a backbone, a main head ``h0`` and ``H`` auxiliary heads.

Every head is a linear map of the backbone's embedding to the class logits (Zhmoginov et al. 2023,
§3: auxiliary heads on the same embedding). Agents may have different backbones
(:data:`BACKBONES`): only predictions ever leave an agent, so their architectures need not match.
"""

from __future__ import annotations

import torch
from torch import nn

BACKBONES = {"small": (32, 32), "large": (128, 64)}  # hidden widths of the MLP backbone


class MultiHeadNet(nn.Module):
    """MLP backbone (ReLU) and ``1 + heads`` linear heads: ``forward(x) -> logits (1 + heads, n, classes)``."""

    def __init__(self, input_dim: int, num_classes: int, heads: int, backbone: str = "large",
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {backbone!r}; valid backbones: {', '.join(BACKBONES)}")
        widths = (input_dim, *BACKBONES[backbone])
        layers: list[nn.Module] = []
        for fan_in, fan_out in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
        self.backbone = nn.Sequential(*layers)
        self.heads = nn.ModuleList([nn.Linear(widths[-1], num_classes) for _ in range(1 + heads)])
        if generator is not None:  # explicit, reproducible initialisation (same in every runtime)
            with torch.no_grad():
                for parameter in self.parameters():
                    bound = 1.0 / parameter.shape[-1] ** 0.5 if parameter.dim() > 1 else 0.05
                    parameter.uniform_(-bound, bound, generator=generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        embedding = self.backbone(x.flatten(1))
        return torch.stack([head(embedding) for head in self.heads])
