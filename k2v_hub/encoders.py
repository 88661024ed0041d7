"""M_EXT and Q_EXT: the model and query knowledge encoders of Know2Vec, with the paper's ablation variants.

- :class:`ModelEncoder` (M_EXT, Eq. 4): per active class ``a`` an inner sequence over classes ``j`` of graph-node
  inputs ``(F[a,a], F[a,j] - F[a,a], F[j,a] - F[a,a])`` (centroid, outgoing KRM edge, incoming KRM edge; at
  ``j = a`` the edges are zero), read by an inner biLSTM into ``theta_a``; an outer biLSTM reads
  ``theta_1..theta_K`` into the model vector ``h``.
- :class:`TaskEncoder` (Q_EXT, Eq. 13): class means of the query images' features, read by a biLSTM into ``t``.
- ``mode="concat"`` replaces each biLSTM by a linear layer over the zero-padded concatenation (up to
  ``max_classes`` steps); ``mode="average"`` by a linear layer over the masked mean (Table 3 of the paper).

Both return unnormalised vectors; :class:`k2v_hub.retriever.Retriever` L2-normalises them.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_sequence

from .options import ENCODER_MODES


class SequenceReader(nn.Module):
    """Reads a batch of variable-length sequences ``[B, L, in]`` (with ``lengths``) into ``[B, out]``."""

    def __init__(self, in_dim: int, out_dim: int, mode: str, max_len: int):
        super().__init__()
        if mode not in ENCODER_MODES:
            raise ValueError(f"Unknown encoder mode {mode!r}; choose one of {', '.join(ENCODER_MODES)}.")
        self.mode, self.max_len = mode, max_len
        if mode == "lstm":
            self.lstm = nn.LSTM(in_dim, out_dim // 2, batch_first=True, bidirectional=True)
        elif mode == "concat":
            self.linear = nn.Linear(in_dim * max_len, out_dim)
        else:
            self.linear = nn.Linear(in_dim, out_dim)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if self.mode == "lstm":
            packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
            _, (h_n, _) = self.lstm(packed)
            return torch.cat([h_n[0], h_n[1]], dim=-1)
        mask = (torch.arange(x.shape[1], device=x.device)[None, :] < lengths[:, None]).unsqueeze(-1).float()
        if self.mode == "average":
            return self.linear((x * mask).sum(1) / mask.sum(1).clamp(min=1.0))
        padded = torch.zeros(x.shape[0], self.max_len, x.shape[2], device=x.device, dtype=x.dtype)
        n = min(self.max_len, x.shape[1])
        padded[:, :n] = (x * mask)[:, :n]
        return self.linear(padded.flatten(1))


class ModelEncoder(nn.Module):
    """M_EXT: graph sets ``[K, K, D]`` (one per model) to model vectors ``[m, embed_dim]``."""

    def __init__(self, feature_dim: int, hidden_dim: int, embed_dim: int, mode: str = "lstm", max_classes: int = 16):
        super().__init__()
        self.node = nn.Sequential(nn.LayerNorm(3 * feature_dim), nn.Linear(3 * feature_dim, hidden_dim), nn.GELU())
        self.inner = SequenceReader(hidden_dim, hidden_dim, mode, max_classes)
        self.outer = SequenceReader(hidden_dim, hidden_dim, mode, max_classes)
        self.out = nn.Linear(hidden_dim, embed_dim)

    @staticmethod
    def node_inputs(graph: torch.Tensor) -> torch.Tensor:
        """``[K, K, D]`` graph features to ``[K, K, 3D]`` node inputs (centroid, outgoing, incoming edge)."""
        cent = torch.diagonal(graph, dim1=0, dim2=1).T  # [K, D]
        out_edge = graph - cent[:, None, :]
        in_edge = graph.transpose(0, 1) - cent[:, None, :]
        return torch.cat([cent[:, None, :].expand_as(graph), out_edge, in_edge], dim=-1)

    def forward(self, graphs: list[torch.Tensor]) -> torch.Tensor:
        ks = [g.shape[0] for g in graphs]
        rows = [self.node(self.node_inputs(g)) for g in graphs]  # each [K, K, H]
        inner_seqs = [r[a] for r in rows for a in range(r.shape[0])]  # sum(K) sequences of length K
        inner_len = torch.tensor([k for k in ks for _ in range(k)])
        theta = self.inner(pad_sequence(inner_seqs, batch_first=True), inner_len)
        outer_seqs = list(torch.split(theta, ks))
        h = self.outer(pad_sequence(outer_seqs, batch_first=True), torch.tensor(ks))
        return self.out(h)


class TaskEncoder(nn.Module):
    """Q_EXT: per-task class means ``[K, D]`` to task vectors ``[n, embed_dim]``."""

    def __init__(self, feature_dim: int, hidden_dim: int, embed_dim: int, mode: str = "lstm", max_classes: int = 16):
        super().__init__()
        self.node = nn.Sequential(nn.LayerNorm(feature_dim), nn.Linear(feature_dim, hidden_dim), nn.GELU())
        self.reader = SequenceReader(hidden_dim, hidden_dim, mode, max_classes)
        self.out = nn.Linear(hidden_dim, embed_dim)

    def forward(self, class_means: list[torch.Tensor]) -> torch.Tensor:
        lengths = torch.tensor([m.shape[0] for m in class_means])
        x = pad_sequence([self.node(m) for m in class_means], batch_first=True)
        return self.out(self.reader(x, lengths))
