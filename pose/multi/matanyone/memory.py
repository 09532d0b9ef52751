"""MatAnyone's working memory without long-term consolidation: a permanent first frame plus a FIFO of the most
recent memory frames, read by top-k anisotropic-L2 attention (XMem/Cutie).

Every person of a clip is one batch item of the values; keys depend only on the frames, so they are stored once
(batch 1) and one affinity serves every person.
"""

from __future__ import annotations

import math

import torch


def similarity(memory_key: torch.Tensor, shrinkage: torch.Tensor, query_key: torch.Tensor,
               selection: torch.Tensor) -> torch.Tensor:  # fmt: skip
    """Negative anisotropic squared distance, scaled: memory key (B, Ck, M), shrinkage (B, 1, M), query key and
    selection (B, Ck, P) -> (B, M, P)."""
    a_sq = memory_key.pow(2).transpose(1, 2) @ selection
    two_ab = 2 * (memory_key.transpose(1, 2) @ (query_key * selection))
    b_sq = (selection * query_key.pow(2)).sum(1, keepdim=True)
    return (two_ab - a_sq - b_sq) * shrinkage.transpose(1, 2) / math.sqrt(memory_key.shape[1])


def top_k_softmax(scores: torch.Tensor, top_k: int) -> torch.Tensor:
    """Softmax over the memory axis (dim 1) restricted to the `top_k` best entries of each query; zeros elsewhere.

    Fewer memory entries than `top_k` (clips smaller than 16 x top_k pixels) use them all.
    """
    values, indices = torch.topk(scores, k=min(top_k, scores.shape[1]), dim=1)
    return torch.zeros_like(scores).scatter_(1, indices, values.softmax(dim=1))


class WorkingMemory:
    """Keys (1, Ck, M), shrinkage (1, 1, M) and per-person values (N, Cv, M) of up to `max_frames` frames, the first
    one permanent; plus the running object summaries (N, 1, Q, C + 1)."""

    def __init__(self, max_frames: int):
        self.max_frames = max_frames
        self.key: torch.Tensor | None = None
        self.shrinkage: torch.Tensor | None = None
        self.value: torch.Tensor | None = None
        self.summaries: torch.Tensor | None = None
        self.tokens_per_frame = 0
        self.permanent_tokens = 0

    @property
    def frames(self) -> int:
        """Number of frames held."""
        return 0 if self.key is None else self.key.shape[-1] // self.tokens_per_frame

    def add(self, key: torch.Tensor, shrinkage: torch.Tensor, value: torch.Tensor, summaries: torch.Tensor) -> None:
        """key (1, Ck, h, w), shrinkage (1, 1, h, w), value (N, 1, Cv, h, w), summaries (N, 1, Q, C + 1).

        The first frame added becomes permanent; later ones join a FIFO of `max_frames - 1` frames. Summaries
        accumulate (sums and areas add up).
        """
        key, shrinkage, value = key.flatten(2), shrinkage.flatten(2), value[:, 0].flatten(2)
        if self.key is None:
            self.key, self.shrinkage, self.value, self.summaries = key, shrinkage, value, summaries
            self.tokens_per_frame = self.permanent_tokens = key.shape[-1]
            return
        self.key = torch.cat([self.key, key], -1)
        self.shrinkage = torch.cat([self.shrinkage, shrinkage], -1)
        self.value = torch.cat([self.value, value], -1)
        self.summaries = self.summaries + summaries
        keep = (self.max_frames - 1) * self.tokens_per_frame
        if self.key.shape[-1] - self.permanent_tokens > keep:
            # drop the oldest temporary frame(s), keep the permanent block at the front
            p = self.permanent_tokens
            self.key, self.shrinkage, self.value = (torch.cat([t[..., :p], t[..., t.shape[-1] - keep :]], -1)
                                                    for t in (self.key, self.shrinkage, self.value))  # fmt: skip

    def read(self, query_key: torch.Tensor, selection: torch.Tensor, top_k: int) -> torch.Tensor:
        """query key and selection (1, Ck, h, w) -> readout (N, 1, Cv, h, w)."""
        height, width = query_key.shape[-2:]
        scores = similarity(self.key, self.shrinkage, query_key.flatten(2), selection.flatten(2))
        readout = self.value @ top_k_softmax(scores, top_k)
        return readout.unflatten(-1, (height, width)).unsqueeze(1)
