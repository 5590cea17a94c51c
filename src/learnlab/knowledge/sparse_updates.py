"""Multi-step sparse updates: accumulate an optimizer's update over a window, apply only part of it.

Sun et al. (2024, abstract; "multi-step sparse updates") erase the effect of injected facts by
training on with sparse updates. The exact algorithm is not published; this wrapper implements
the two readings of it. Over a window of ``tau`` steps the wrapped optimizer moves the weights
freely; at the end of the window the accumulated update of every tensor,

    Δ = θ_{t+τ} − θ_t,

is masked and re-applied from the window's start,

    θ_{t+τ} ← θ_t + Δ ⊙ M,

with, per tensor, ``mode="keep"``: M = 1 on the top-k% entries of |Δ| and 0 elsewhere (the trim
step of TIES-Merging), or ``mode="drop"``: M = 0 on the top-k% entries and 1 elsewhere (ignore-k of
Sun et al. 2025, Eq. 3, applied to a window of training instead of one fine-tuning update).
``selection="random"`` chooses the same number of entries uniformly at random (the control).
Kept entries are not rescaled. ``drop`` with k = 0, or ``keep`` with k = 100%, is plain training
exactly, for any ``tau``.

The wrapped optimizer keeps its own state (e.g. Adam's moments, which still include the masked
parts of the update); the wrapper adds the window's starting weights (one copy of the
parameters) and a step counter, both in its ``state_dict``. It works with any ``torch.optim``
optimizer and any model, and with learning-rate schedulers (it shares the wrapped optimizer's
``param_groups``)::

    optimizer = SparseUpdateOptimizer(torch.optim.AdamW(model.parameters(), lr=3e-4),
                                      window=10, fraction=0.08, mode="drop")
    for batch in data:
        loss = model(batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch

from learnlab.core.runtime import derive_seed
from learnlab.knowledge.update_pruning import drop_mask

Mode = Literal["keep", "drop"]
SparseSelection = Literal["top", "random"]


class SparseUpdateOptimizer(torch.optim.Optimizer):
    """Wrap ``optimizer`` so that every ``window`` steps only a sparse part of the accumulated update is kept.

    Args:
        optimizer: any ``torch.optim`` optimizer (its ``param_groups`` are shared, not copied).
        window: τ, optimizer steps per window (1: every step's update is masked).
        fraction: k, the share of each tensor's entries selected (0 <= k <= 1).
        mode: ``keep`` the selected entries of the update (TIES trim), or ``drop`` them (ignore-k).
        selection: ``top`` (largest |Δ| per tensor) or ``random`` (same count, uniformly; the control).
        seed: seeds the random selections (window w of tensor i uses a generator seeded by (seed, w, i)).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, window: int, fraction: float, mode: Mode = "drop",
                 selection: SparseSelection = "top", seed: int = 0) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"fraction must be in [0, 1], got {fraction}")
        if mode not in ("keep", "drop"):
            raise ValueError(f"mode must be keep or drop, got {mode!r}")
        if selection not in ("top", "random"):
            raise ValueError(f"selection must be top or random, got {selection!r}")
        self.optimizer = optimizer
        self.window, self.fraction, self.mode, self.selection, self.seed = window, fraction, mode, selection, seed
        self.steps = 0
        self._anchors: list[torch.Tensor] | None = None
        super().__init__(optimizer.param_groups, optimizer.defaults)
        self.param_groups = optimizer.param_groups  # the same group dicts: schedulers and lr edits reach both

    def _parameters(self) -> list[torch.Tensor]:
        return [parameter for group in self.param_groups for parameter in group["params"]]

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> Any:  # type: ignore[override]
        """One step of the wrapped optimizer; at the end of a window, mask the window's update."""
        if self._anchors is None:
            self._anchors = [parameter.detach().clone() for parameter in self._parameters()]
        with torch.enable_grad():
            loss = self.optimizer.step(closure) if closure is not None else self.optimizer.step()
        self.steps += 1
        if self.steps % self.window == 0:
            self._apply_mask()
        return loss

    @torch.no_grad()
    def _apply_mask(self) -> dict[str, float]:
        """θ ← θ_start + Δ ⊙ M for every parameter; the window starts again from the new weights."""
        assert self._anchors is not None
        window_index = self.steps // self.window
        total = removed = 0.0
        for index, (parameter, anchor) in enumerate(zip(self._parameters(), self._anchors)):
            delta = parameter - anchor
            count = self.fraction if self.mode == "drop" else 1.0 - self.fraction
            generator = None
            if self.selection == "random":
                generator = torch.Generator().manual_seed(derive_seed(self.seed, "sparse-update", str(window_index), str(index)))
            if self.mode == "drop":
                reset = drop_mask(delta, count, self.selection, generator)
            else:  # keep the top-k: reset the complement (the smallest 1 - k, or a random 1 - k)
                reset = drop_mask(delta, count, "bottom" if self.selection == "top" else "random", generator)
            total += float(delta.double().square().sum())
            removed += float(delta[reset].double().square().sum())
            parameter.copy_(torch.where(reset, anchor, parameter))
            anchor.copy_(parameter)
        self.last_removed_share = removed / total if total > 0 else 0.0
        return {"removed_update_share": self.last_removed_share}

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        """The wrapped optimizer's state plus the window's starting weights and the step count."""
        return {"optimizer": self.optimizer.state_dict(), "steps": self.steps,
                "anchors": None if self._anchors is None else [anchor.clone() for anchor in self._anchors],
                "settings": {"window": self.window, "fraction": self.fraction, "mode": self.mode,
                             "selection": self.selection, "seed": self.seed}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        settings = {"window": self.window, "fraction": self.fraction, "mode": self.mode, "selection": self.selection,
                    "seed": self.seed}
        if state_dict.get("settings") != settings:
            raise ValueError(f"state was saved with settings {state_dict.get('settings')}, this optimizer has {settings}")
        self.optimizer.load_state_dict(state_dict["optimizer"])
        self.param_groups = self.optimizer.param_groups
        self.steps = int(state_dict["steps"])
        anchors = state_dict["anchors"]
        if anchors is None:
            self._anchors = None
        else:
            parameters = self._parameters()
            if len(anchors) != len(parameters):
                raise ValueError(f"state holds {len(anchors)} window anchors for {len(parameters)} parameters")
            self._anchors = [anchor.to(parameter.device, parameter.dtype).clone() for anchor, parameter in zip(anchors, parameters)]
