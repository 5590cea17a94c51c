"""Token layouts and attention masks of the compression methods.

A compressed sequence is laid out as context ‖ slots ‖ rest (the question and the answer), and
each method decides which earlier positions a position may attend to (True = attend):

* ``full``: no compression; ordinary causal attention over context ‖ rest.
* ``gisting`` (Mu et al. 2023, §3): k gist tokens after the context; gists attend causally to the
  context and to earlier gists; later tokens attend only to the gists and to earlier rest tokens,
  never to the raw context, so the gists' keys and values are all they can read of it.
* ``gistpool`` (Petrov et al. 2025, §3): the context is cut into windows of r tokens and one gist
  follows each window (interleaved: w_1 g_1 w_2 g_2 ...); a gist attends only to the r tokens of
  its own window (not to itself, other windows or other gists), context tokens attend causally to
  earlier context tokens, and later tokens attend to the gists and to earlier rest tokens. With
  uniform attention logits a gist's output is exactly the mean of its window's values: GistPool
  starts from average pooling.

Average pooling needs no mask of its own: the context is read with ``full`` causal attention and
its keys and values are averaged per window afterwards (:mod:`learnlab.compression.caches`).

:func:`attention_allowed` returns the boolean (T, T) matrix of a layout; :func:`additive_mask`
turns it into the 4-D float mask that ``transformers`` decoders accept as ``attention_mask``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

Method = Literal["full", "gisting", "gistpool"]
CONTEXT, SLOT, REST = 0, 1, 2


@dataclass(frozen=True)
class Layout:
    """Per position: its role (``CONTEXT``, ``SLOT`` or ``REST``) and its window (-1 outside windows)."""

    method: Method
    roles: tuple[int, ...]
    windows: tuple[int, ...]

    @property
    def length(self) -> int:
        return len(self.roles)

    def positions(self, role: int) -> list[int]:
        return [index for index, value in enumerate(self.roles) if value == role]


def build_layout(method: Method, context: int, rest: int, rate: int = 1, slots: int | None = None) -> Layout:
    """The layout of ``context`` tokens compressed at ``rate`` (r = L / k), followed by ``rest`` tokens.

    ``gisting`` puts ``slots`` gists (default L / r) after the context; ``gistpool`` one gist after
    each window of ``rate`` tokens (``rate`` must divide the context length); ``full`` has no slots.
    """
    if context < 1 or rest < 0 or rate < 1:
        raise ValueError(f"need context >= 1, rest >= 0, rate >= 1; got {context}, {rest}, {rate}")
    if method == "full":
        return Layout(method, (CONTEXT,) * context + (REST,) * rest, (-1,) * (context + rest))
    if context % rate:
        raise ValueError(f"compression rate {rate} does not divide the context length {context}")
    count = context // rate if slots is None else slots
    if method == "gisting":
        roles = (CONTEXT,) * context + (SLOT,) * count + (REST,) * rest
        return Layout(method, roles, (-1,) * len(roles))
    if method == "gistpool":
        roles, windows = [], []
        for window in range(context // rate):
            roles += [CONTEXT] * rate + [SLOT]
            windows += [window] * (rate + 1)
        return Layout(method, tuple(roles + [REST] * rest), tuple(windows + [-1] * rest))
    raise ValueError(f"unknown method {method!r}; choose full, gisting or gistpool")


def attention_allowed(layout: Layout) -> torch.Tensor:
    """Boolean (T, T): entry (i, j) is True when position i may attend to position j (always j <= i)."""
    roles = torch.tensor(layout.roles)
    windows = torch.tensor(layout.windows)
    length = layout.length
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    query, key = roles[:, None], roles[None, :]
    if layout.method == "full":
        return causal
    if layout.method == "gisting":
        allowed = (query == CONTEXT) & (key == CONTEXT)
        allowed |= (query == SLOT) & (key != REST)
        allowed |= (query == REST) & (key != CONTEXT)
        return allowed & causal
    same_window = windows[:, None] == windows[None, :]
    allowed = (query == CONTEXT) & (key == CONTEXT)
    allowed |= (query == SLOT) & (key == CONTEXT) & same_window
    allowed |= (query == REST) & (key != CONTEXT)
    return allowed & causal


def additive_mask(allowed: torch.Tensor, dtype: torch.dtype = torch.float32, batch: int = 1) -> torch.Tensor:
    """A (batch, 1, T, T) float mask: 0 where attention is allowed, the dtype's minimum elsewhere."""
    mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)
    return mask[None, None].expand(batch, 1, *allowed.shape)
