"""A linear-chain CRF with hard transition constraints derived from a BIO / BIOES tag scheme.

The CRF scores a tag sequence ``y`` of length ``L`` as::

    start[y_0] + sum_t emit[t, y_t] + sum_{t>0} trans[y_{t-1}, y_t] + end[y_{L-1}]

and is trained with the negative log-likelihood (forward algorithm). Transitions that the scheme forbids
(``O -> I-PER``, ``B-PER -> I-LOC``, a sequence starting with ``I-X``...) are masked: with ``-inf`` in
Viterbi decoding, so a forbidden sequence can never be predicted, and with ``-10000`` in training, whose
``exp`` underflows to exactly 0 in float32 (the same probabilities as ``-inf``) while keeping gradients
finite. Sequences are left-aligned with a ``[B, L]`` mask (``1`` for real positions, all first); rows with
no position contribute zero loss and decode to nothing.
"""

from __future__ import annotations

import torch
from torch import nn

from bertkit.errors import ConfigError

TRAIN_MASK_VALUE = -10000.0


def _split_tag(tag: str) -> tuple[str, str]:
    """``"B-PER" -> ("B", "PER")``, ``"O" -> ("O", "")``."""
    if tag == "O":
        return "O", ""
    if len(tag) > 2 and tag[1] == "-" and tag[0] in "BIES":
        return tag[0], tag[2:]
    raise ConfigError(f"tag '{tag}' is not a BIO/BIOES tag (expected 'O' or a prefix B-/I-/E-/S- and a type)")


def allowed_transitions(tags: list[str], scheme: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Which transitions a tag scheme allows.

    Args:
        tags: Tag names in label order, e.g. ``["O", "B-PER", "I-PER"]``.
        scheme: ``"BIO"`` (IOB2) or ``"BIOES"``.

    Returns:
        ``(trans [C, C], start [C], end [C])`` bool tensors; ``trans[i, j]`` is True when tag j may follow
        tag i, ``start[j]`` when a sequence may begin with j, ``end[i]`` when it may end with i.
    """
    scheme = scheme.upper()
    if scheme not in ("BIO", "BIOES"):
        raise ConfigError(f"scheme='{scheme}' is not valid; choose BIO or BIOES")
    parts = [_split_tag(t) for t in tags]
    for p, _ in parts:
        if scheme == "BIO" and p in "ES":
            raise ConfigError(f"tag prefix '{p}-' is not part of the BIO scheme; use scheme='BIOES'")
    c = len(tags)
    trans = torch.zeros(c, c, dtype=torch.bool)
    inside = ("I",) if scheme == "BIO" else ("I", "E")  # prefixes that continue an open entity
    opens = ("B", "I")  # prefixes after which an entity is still open (BIOES); in BIO any B/I
    for i, (pi, ti) in enumerate(parts):
        for j, (pj, tj) in enumerate(parts):
            if pj in inside:
                ok = pi in opens and ti == tj
            elif scheme == "BIOES":
                ok = pi not in opens  # B/I must be continued by I/E of the same type
            else:
                ok = True
            trans[i, j] = ok
    start = torch.tensor([p not in inside for p, _ in parts], dtype=torch.bool)
    end = torch.tensor([scheme == "BIO" or p not in opens for p, _ in parts], dtype=torch.bool)
    return trans, start, end


class CRF(nn.Module):
    """Linear-chain CRF over ``C`` tags.

    Args:
        num_tags: Number of tags C.
        tags: Tag names; with ``scheme`` they define the hard constraints (None: everything allowed).
        scheme: ``"BIO"`` or ``"BIOES"`` (ignored without ``tags``).

    Parameters ``transitions [C, C]`` (from, to), ``start_transitions [C]`` and ``end_transitions [C]`` are
    saved with the model; the constraint masks are rebuilt from the tags and scheme.
    """

    allowed: torch.Tensor
    allowed_start: torch.Tensor
    allowed_end: torch.Tensor

    def __init__(self, num_tags: int, tags: list[str] | None = None, scheme: str = "BIO") -> None:
        super().__init__()
        self.num_tags = num_tags
        self.transitions = nn.Parameter(torch.empty(num_tags, num_tags).uniform_(-0.1, 0.1))
        self.start_transitions = nn.Parameter(torch.empty(num_tags).uniform_(-0.1, 0.1))
        self.end_transitions = nn.Parameter(torch.empty(num_tags).uniform_(-0.1, 0.1))
        if tags is not None:
            if len(tags) != num_tags:
                raise ConfigError(f"CRF got {len(tags)} tag names for {num_tags} tags")
            trans, start, end = allowed_transitions(tags, scheme)
        else:
            trans = torch.ones(num_tags, num_tags, dtype=torch.bool)
            start = end = torch.ones(num_tags, dtype=torch.bool)
        self.register_buffer("allowed", trans, persistent=False)  # [C, C]
        self.register_buffer("allowed_start", start, persistent=False)  # [C]
        self.register_buffer("allowed_end", end, persistent=False)  # [C]

    def _scores(self, fill: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Constrained (transitions, start, end) with forbidden entries set to ``fill``."""
        trans = self.transitions.float().masked_fill(~self.allowed, fill)
        start = self.start_transitions.float().masked_fill(~self.allowed_start, fill)
        end = self.end_transitions.float().masked_fill(~self.allowed_end, fill)
        return trans, start, end

    @staticmethod
    def _check(emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if emissions.dim() != 3 or mask.shape != emissions.shape[:2]:
            raise ConfigError(
                f"CRF expects emissions [B, L, C] and mask [B, L], got {tuple(emissions.shape)} and "
                f"{tuple(mask.shape)}"
            )
        return mask.bool()

    def sequence_score(self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Unnormalised score of ``tags [B, L]`` (training masks), ``[B]``."""
        mask = self._check(emissions, mask)
        trans, start, end = self._scores(TRAIN_MASK_VALUE)
        emissions = emissions.float()
        b, length, _ = emissions.shape
        tags = tags.long().clamp(0, self.num_tags - 1) * mask  # padding -> tag 0, masked out below
        rows = torch.arange(b, device=emissions.device)
        emit = emissions.gather(2, tags.unsqueeze(-1)).squeeze(-1) * mask  # [B, L]
        score = emit.sum(1) + start[tags[:, 0]] * mask[:, 0]
        if length > 1:
            step = trans[tags[:, :-1], tags[:, 1:]] * mask[:, 1:]  # [B, L-1]
            score = score + step.sum(1)
        lengths = mask.sum(1)  # [B]
        last = tags[rows, (lengths - 1).clamp(min=0)]
        return score + end[last] * (lengths > 0)

    def log_partition(self, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``log Z`` by the forward algorithm, ``[B]`` (0 for empty rows)."""
        mask = self._check(emissions, mask)
        trans, start, end = self._scores(TRAIN_MASK_VALUE)
        emissions = emissions.float()
        alpha = start.unsqueeze(0) + emissions[:, 0]  # [B, C]
        for t in range(1, emissions.size(1)):
            nxt = torch.logsumexp(alpha.unsqueeze(2) + trans.unsqueeze(0), dim=1) + emissions[:, t]  # [B, C]
            alpha = torch.where(mask[:, t : t + 1], nxt, alpha)
        log_z = torch.logsumexp(alpha + end.unsqueeze(0), dim=1)  # [B]
        return log_z * mask[:, 0]

    def forward(
        self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor, reduction: str = "mean"
    ) -> torch.Tensor:
        """Negative log-likelihood of ``tags``.

        Args:
            emissions: ``[B, L, C]`` per-position tag scores.
            tags: ``[B, L]`` gold tags (any value at padded positions).
            mask: ``[B, L]`` 1 for real positions, left-aligned.
            reduction: ``"mean"`` (over rows with at least one position), ``"sum"`` or ``"none"`` (``[B]``).

        Returns:
            The NLL (a 0-dim tensor unless ``reduction="none"``).
        """
        nll = self.log_partition(emissions, mask) - self.sequence_score(emissions, tags, mask)  # [B]
        if reduction == "none":
            return nll
        if reduction == "sum":
            return nll.sum()
        rows = mask.bool()[:, 0].sum().clamp(min=1)
        return nll.sum() / rows

    @torch.no_grad()
    def decode(self, emissions: torch.Tensor, mask: torch.Tensor, pad_value: int = 0) -> torch.Tensor:
        """Viterbi decoding under the hard constraints.

        Args:
            emissions: ``[B, L, C]``.
            mask: ``[B, L]`` left-aligned.
            pad_value: value written at padded positions.

        Returns:
            ``[B, L]`` best tag sequence per row (``pad_value`` where ``mask`` is 0).
        """
        mask = self._check(emissions, mask)
        trans, start, end = self._scores(float("-inf"))
        emissions = emissions.float()
        b, length, c = emissions.shape
        if length == 0:
            return torch.zeros(b, 0, dtype=torch.long, device=emissions.device)
        score = start.unsqueeze(0) + emissions[:, 0]  # [B, C]
        identity = torch.arange(c, device=emissions.device).expand(b, c)
        history = []
        for t in range(1, length):
            cand = score.unsqueeze(2) + trans.unsqueeze(0)  # [B, C(from), C(to)]
            best, idx = cand.max(dim=1)  # [B, C]
            step = mask[:, t : t + 1]
            score = torch.where(step, best + emissions[:, t], score)
            history.append(torch.where(step, idx, identity))
        score = score + end.unsqueeze(0)
        best_last = score.argmax(dim=1)  # [B]
        path = [best_last]
        for idx in reversed(history):
            best_last = idx.gather(1, best_last.unsqueeze(1)).squeeze(1)
            path.append(best_last)
        out = torch.stack(path[::-1], dim=1)  # [B, L]
        return out.masked_fill(~mask, pad_value)


def compact(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-align the True positions of ``mask [B, T]``.

    Returns:
        ``(index [B, L], compact_mask [B, L])`` with ``L = max(mask.sum(1))`` (at least 1): ``index[b, k]`` is
        the position of the k-th True entry of row b (0 where ``compact_mask`` is False).
    """
    mask = mask.bool()
    lengths = mask.sum(1)  # [B]
    width = max(int(lengths.max()) if mask.numel() else 0, 1)
    order = torch.sort((~mask).to(torch.int8), dim=1, stable=True).indices[:, :width]  # [B, L]
    keep = torch.arange(width, device=mask.device).unsqueeze(0) < lengths.unsqueeze(1)  # [B, L]
    return order * keep, keep
