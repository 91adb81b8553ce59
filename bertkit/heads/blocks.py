"""Small building blocks a head can stack on the encoder's token states (driven by ``HeadConfig.extra``).

* task attention (``[B, T, H] + mask [B, T] -> [B, T, H]``, pre-norm residual, padding-aware: padded keys are
  never attended and padded outputs are zeroed): :class:`MultiHeadTaskAttention`, :class:`CBAMAttention`,
  :class:`DifferentialAttention`;
* feed-forward networks: :class:`FeedForward` (``mlp``, ``glu``, ``geglu``, ``swiglu``);
* normalisations: ``layer_norm``, :class:`RMSNorm`, :class:`BandRMSNorm`, :class:`ZeroCenteredRMSNorm`;
* :class:`IntermediateProjection` (pooled ``[B, H] -> [B, I]``) and :class:`TokenBlockStack` (attention then
  FFN), which :class:`~bertkit.heads.base.BaseHead` builds from ``extra`` (see docs/heads.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from bertkit.config import check_choice
from bertkit.errors import ConfigError

ATTENTION_TYPES = ("multi_head", "cbam", "differential")
FFN_TYPES = ("mlp", "glu", "geglu", "swiglu")
NORM_TYPES = ("layer_norm", "rms_norm", "band_rms", "zero_centered_rms_norm", "none")

#: ``HeadConfig.extra`` keys read by :func:`blocks_from_extra` / :func:`intermediate_from_extra`.
BLOCK_EXTRA_KEYS = (
    "task_attention",
    "attention_heads",
    "ffn",
    "ffn_expansion_factor",
    "norm",
    "intermediate_size",
)


# ------------------------------------------------------------------ normalisation
class RMSNorm(nn.Module):
    """RMS normalisation: ``x / rms(x) * g`` (no centring, no bias).

    Args:
        dim: feature width H.
        eps: added to the mean square.
    """

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        return xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise the last dimension of ``x [..., H]``."""
        return (self._normalise(x) * self.weight.float()).to(x.dtype)


class BandRMSNorm(RMSNorm):
    """RMS norm whose learned scale is constrained to the band ``[1 - band, 1]``.

    ``y = x / rms(x) * s`` with ``s = 1 - band * sigmoid(p)`` per feature, so the output RMS always lies in
    ``[1 - band, 1]``: the layer can shrink features a little but never blow them up (more stable than a free
    scale). Starts at ``s = 1 - band / 2``.

    Args:
        dim: feature width H.
        band: width of the allowed band (0 < band < 1).
        eps: added to the mean square.
    """

    def __init__(self, dim: int, band: float = 0.1, eps: float = 1e-6) -> None:
        super().__init__(dim, eps)
        if not 0.0 < band < 1.0:
            raise ConfigError(f"band_rms band must be in (0, 1), got {band}")
        self.band = float(band)
        del self.weight
        self.band_logit = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise the last dimension of ``x [..., H]``."""
        scale = 1.0 - self.band * torch.sigmoid(self.band_logit.float())  # [H] in [1-band, 1]
        return (self._normalise(x) * scale).to(x.dtype)


class ZeroCenteredRMSNorm(RMSNorm):
    """RMS norm of the mean-centred input with a zero-centred scale: ``(x - mean) / rms * (1 + w)``, ``w = 0``.

    Centring gives LayerNorm's zero-mean outputs; storing the scale as an offset from 1 keeps weight decay
    pulling it towards identity rather than towards zero.
    """

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__(dim, eps)
        nn.init.zeros_(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise the last dimension of ``x [..., H]``."""
        xf = x.float()
        xf = xf - xf.mean(-1, keepdim=True)
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (y * (1.0 + self.weight.float())).to(x.dtype)


def build_norm(kind: str | None, dim: int) -> nn.Module:
    """A normalisation layer over the last dimension.

    Args:
        kind: ``layer_norm``, ``rms_norm``, ``band_rms``, ``zero_centered_rms_norm`` or ``none``/None (identity).
        dim: feature width H.
    """
    kind = check_choice("norm", kind or "none", NORM_TYPES)
    if kind == "layer_norm":
        return nn.LayerNorm(dim)
    if kind == "rms_norm":
        return RMSNorm(dim)
    if kind == "band_rms":
        return BandRMSNorm(dim)
    if kind == "zero_centered_rms_norm":
        return ZeroCenteredRMSNorm(dim)
    return nn.Identity()


# ---------------------------------------------------------------------- helpers
def _bool_mask(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``[B, T]`` bool mask (all real when None)."""
    if mask is None:
        return torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
    return mask.to(device=x.device).bool()


def _key_mask(mask: torch.Tensor) -> torch.Tensor:
    """``[B, 1, 1, T]`` attention mask; rows without any real token attend everything (then zeroed) to avoid NaN."""
    safe = mask | ~mask.any(1, keepdim=True)  # [B, T]
    return safe[:, None, None, :]


def _split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    B, T, D = x.shape
    return x.view(B, T, num_heads, D // num_heads).transpose(1, 2)  # [B, nh, T, d]


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    B, nh, T, d = x.shape
    return x.transpose(1, 2).reshape(B, T, nh * d)  # [B, T, nh * d]


def _check_heads(dim: int, num_heads: int, multiple: int = 1) -> None:
    if num_heads < 1 or dim % num_heads or (dim // num_heads) % multiple:
        need = f" and an even head width ({dim}/{num_heads})" if multiple > 1 else ""
        raise ConfigError(
            f"attention_heads={num_heads} must divide the width {dim}{need}; pick another count"
        )


# -------------------------------------------------------------------- attention
class MultiHeadTaskAttention(nn.Module):
    """Pre-norm residual multi-head self-attention over the token states: ``x + Wo·attn(norm(x))``.

    Args:
        dim: width H.
        num_heads: heads (must divide H).
        dropout: dropout on attention weights and on the residual branch.
        norm: pre-normalisation kind (see :func:`build_norm`).
    """

    def __init__(
        self, dim: int, num_heads: int = 4, dropout: float = 0.0, norm: str | None = "layer_norm"
    ) -> None:
        super().__init__()
        _check_heads(dim, num_heads)
        self.num_heads = num_heads
        self.dropout = dropout
        self.norm = build_norm(norm, dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``x [B, T, H]``, ``mask [B, T]`` (1 = real token) -> ``[B, T, H]`` with padded rows zeroed."""
        m = _bool_mask(x, mask)  # [B, T]
        q, k, v = (_split_heads(t, self.num_heads) for t in self.qkv(self.norm(x)).chunk(3, dim=-1))
        p = self.dropout if self.training else 0.0
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=_key_mask(m), dropout_p=p)  # [B, nh, T, d]
        y = x + self.drop(self.out(_merge_heads(attn)))  # [B, T, H]
        return y * m.unsqueeze(-1).to(y.dtype)


class CBAMAttention(nn.Module):
    """CBAM for sequences: channel attention then token attention, as a pre-norm residual branch.

    Channel attention: a shared bottleneck MLP over the masked mean- and max-pooled token states gives one
    sigmoid gate per feature ``[B, 1, H]``. Token attention: a 1-D convolution over the per-token mean and max
    across features gives one sigmoid gate per token ``[B, T, 1]``. Padded tokens are excluded from the pooling,
    zeroed before the convolution and in the output.

    Args:
        dim: width H.
        reduction: bottleneck ratio of the channel MLP (hidden width ``max(H // reduction, 4)``).
        kernel_size: odd width of the token-attention convolution.
        dropout: dropout on the residual branch.
        norm: pre-normalisation kind.
    """

    def __init__(
        self,
        dim: int,
        reduction: int = 4,
        kernel_size: int = 7,
        dropout: float = 0.0,
        norm: str | None = "layer_norm",
    ) -> None:
        super().__init__()
        if kernel_size % 2 == 0:
            raise ConfigError(f"cbam kernel_size must be odd, got {kernel_size}")
        self.norm = build_norm(norm, dim)
        hidden = max(dim // reduction, 4)
        self.channel_mlp = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, dim))
        self.token_conv = nn.Conv1d(2, 1, kernel_size, padding=kernel_size // 2)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``x [B, T, H]``, ``mask [B, T]`` -> ``[B, T, H]`` with padded rows zeroed."""
        m = _bool_mask(x, mask)  # [B, T]
        mf = m.unsqueeze(-1).to(x.dtype)  # [B, T, 1]
        h = self.norm(x) * mf  # [B, T, H]
        avg = h.sum(1) / mf.sum(1).clamp(min=1.0)  # [B, H]
        mx = h.masked_fill(~m.unsqueeze(-1), torch.finfo(h.dtype).min).max(1).values  # [B, H]
        mx = torch.where(m.any(1, keepdim=True), mx, torch.zeros_like(mx))
        channel_gate = torch.sigmoid(self.channel_mlp(avg) + self.channel_mlp(mx)).unsqueeze(1)  # [B, 1, H]
        h = h * channel_gate
        desc = torch.stack([h.mean(-1), h.max(-1).values], dim=1) * mf.transpose(1, 2)  # [B, 2, T]
        token_gate = torch.sigmoid(self.token_conv(desc)).transpose(1, 2)  # [B, T, 1]
        y = x + self.drop(h * token_gate)
        return y * mf


class DifferentialAttention(nn.Module):
    """Differential attention (Ye et al., 2024): the difference of two softmax attention maps.

    Each head splits its queries/keys in two halves and attends with ``softmax(Q1 K1ᵀ) - λ softmax(Q2 K2ᵀ)``,
    cancelling attention noise common to both maps; ``λ = exp(λq1·λk1) - exp(λq2·λk2) + λ_init`` is learned.
    Each head's output is RMS-normalised and scaled by ``1 - λ_init``. Pre-norm residual like the others.

    Args:
        dim: width H.
        num_heads: heads (must divide H, with an even head width).
        dropout: dropout on attention weights and on the residual branch.
        norm: pre-normalisation kind.
        lambda_init: initial λ (0.8 - 0.6·exp(-0.3·(depth-1)); 0.2 for a single layer).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 4,
        dropout: float = 0.0,
        norm: str | None = "layer_norm",
        lambda_init: float = 0.2,
    ) -> None:
        super().__init__()
        _check_heads(dim, num_heads, multiple=2)
        self.num_heads = num_heads
        self.dropout = dropout
        self.lambda_init = float(lambda_init)
        half = dim // num_heads // 2
        self.norm = build_norm(norm, dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.lambda_params = nn.Parameter(torch.randn(4, half) * 0.1)  # λq1, λk1, λq2, λk2
        self.head_norm = RMSNorm(dim // num_heads)
        self.out = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)

    def lambda_value(self) -> torch.Tensor:
        """The current scalar λ."""
        q1, k1, q2, k2 = self.lambda_params.float()
        return torch.exp((q1 * k1).sum()) - torch.exp((q2 * k2).sum()) + self.lambda_init

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``x [B, T, H]``, ``mask [B, T]`` -> ``[B, T, H]`` with padded rows zeroed."""
        m = _bool_mask(x, mask)  # [B, T]
        q, k, v = (_split_heads(t, self.num_heads) for t in self.qkv(self.norm(x)).chunk(3, dim=-1))
        q1, q2 = q.chunk(2, dim=-1)  # [B, nh, T, d/2] each
        k1, k2 = k.chunk(2, dim=-1)
        km = _key_mask(m)
        p = self.dropout if self.training else 0.0
        a1 = F.scaled_dot_product_attention(
            q1, k1, v, attn_mask=km, dropout_p=p
        )  # [B, nh, T, d], 1/sqrt(d/2)
        a2 = F.scaled_dot_product_attention(q2, k2, v, attn_mask=km, dropout_p=p)
        lam = self.lambda_value().to(a1.dtype)
        heads = self.head_norm(a1 - lam * a2) * (1.0 - self.lambda_init)  # [B, nh, T, d]
        y = x + self.drop(self.out(_merge_heads(heads)))
        return y * m.unsqueeze(-1).to(y.dtype)


def build_attention(
    kind: str, dim: int, num_heads: int = 4, dropout: float = 0.0, norm: str | None = "layer_norm"
) -> nn.Module:
    """A task-attention block ``([B, T, H], mask [B, T]) -> [B, T, H]``.

    Args:
        kind: ``multi_head``, ``cbam`` or ``differential``.
        dim: width H.
        num_heads: heads for ``multi_head``/``differential`` (ignored by ``cbam``).
        dropout: dropout inside the block.
        norm: pre-normalisation kind.
    """
    kind = check_choice("task_attention", kind, ATTENTION_TYPES)
    if kind == "cbam":
        return CBAMAttention(dim, dropout=dropout, norm=norm)
    if kind == "differential":
        return DifferentialAttention(dim, num_heads, dropout=dropout, norm=norm)
    return MultiHeadTaskAttention(dim, num_heads, dropout=dropout, norm=norm)


# ------------------------------------------------------------------ feed-forward
class FeedForward(nn.Module):
    """Position-wise feed-forward network ``[..., H] -> [..., H]`` (not residual; see :class:`TokenBlockStack`).

    ``mlp``: ``W2·gelu(W1·x)``; gated kinds use ``W2·(a ⊙ act(b))`` with ``[a, b] = W1·x``: ``glu`` (sigmoid),
    ``geglu`` (GELU), ``swiglu`` (SiLU). The hidden width is ``round(expansion_factor · H)``.

    Args:
        kind: ``mlp``, ``glu``, ``geglu`` or ``swiglu``.
        dim: input width H.
        expansion_factor: hidden width multiplier.
        dropout: dropout after the activation.
        out_dim: output width (default H).
    """

    _GATES: ClassVar[dict[str, Callable[[torch.Tensor], torch.Tensor]]] = {
        "glu": torch.sigmoid,
        "geglu": F.gelu,
        "swiglu": F.silu,
    }

    def __init__(
        self,
        kind: str,
        dim: int,
        expansion_factor: float = 4.0,
        dropout: float = 0.0,
        out_dim: int | None = None,
    ) -> None:
        super().__init__()
        self.kind = check_choice("ffn", kind, FFN_TYPES)
        if expansion_factor <= 0:
            raise ConfigError(f"ffn_expansion_factor must be > 0, got {expansion_factor}")
        hidden = max(1, round(dim * float(expansion_factor)))
        gated = self.kind != "mlp"
        self.w_in = nn.Linear(dim, hidden * (2 if gated else 1))
        self.w_out = nn.Linear(hidden, out_dim or dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [..., H] -> [..., out_dim]``."""
        h = self.w_in(x)
        if self.kind == "mlp":
            h = F.gelu(h)
        else:
            a, b = h.chunk(2, dim=-1)
            h = a * self._GATES[self.kind](b)
        return self.w_out(self.drop(h))


def build_ffn(kind: str, dim: int, expansion_factor: float = 4.0, dropout: float = 0.0) -> FeedForward:
    """A :class:`FeedForward` of ``kind`` with hidden width ``expansion_factor · dim``."""
    return FeedForward(kind, dim, expansion_factor, dropout)


# ------------------------------------------------------------- stacks and heads
class TokenBlockStack(nn.Module):
    """Optional task attention then optional pre-norm residual FFN over token states (padding-aware).

    Args:
        dim: width H.
        attention: attention kind or None.
        num_heads: attention heads.
        ffn: FFN kind or None.
        expansion_factor: FFN hidden width multiplier.
        norm: normalisation kind used before each block.
        dropout: dropout inside the blocks.
    """

    def __init__(
        self,
        dim: int,
        attention: str | None = None,
        num_heads: int = 4,
        ffn: str | None = None,
        expansion_factor: float = 4.0,
        norm: str | None = "layer_norm",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.attention = build_attention(attention, dim, num_heads, dropout, norm) if attention else None
        self.ffn_norm = build_norm(norm, dim) if ffn else None
        self.ffn = build_ffn(ffn, dim, expansion_factor, dropout) if ffn else None

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``x [B, T, H]``, ``mask [B, T]`` -> ``[B, T, H]`` (padded rows zeroed)."""
        m = _bool_mask(x, mask)
        if self.attention is not None:
            x = self.attention(x, m)
        if self.ffn is not None and self.ffn_norm is not None:
            x = (x + self.ffn(self.ffn_norm(x))) * m.unsqueeze(-1).to(x.dtype)
        return x


class IntermediateProjection(nn.Module):
    """Pooled features ``[B, H] -> [B, I]``: linear, normalisation, activation, dropout.

    Args:
        in_dim: input width H.
        out_dim: intermediate width I.
        norm: normalisation kind (see :func:`build_norm`).
        activation: activation module class.
        dropout: dropout after the activation.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        norm: str | None = "layer_norm",
        activation: Callable[[], nn.Module] = nn.GELU,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if out_dim < 1:
            raise ConfigError(f"intermediate_size must be >= 1, got {out_dim}")
        self.linear = nn.Linear(in_dim, out_dim)
        self.norm = build_norm(norm, out_dim)
        self.act = activation()
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, H] -> [B, I]``."""
        return self.drop(self.act(self.norm(self.linear(x))))


def _optional(value: Any) -> str | None:
    """None for an absent/false/"none" option, else the value as a string."""
    if not value or str(getattr(value, "value", value)).lower() == "none":
        return None
    return str(getattr(value, "value", value))


def _norm_from_extra(extra: dict[str, Any]) -> str:
    return check_choice("norm", extra.get("norm") or "layer_norm", NORM_TYPES)


def blocks_from_extra(extra: dict[str, Any], dim: int, dropout: float = 0.0) -> TokenBlockStack | None:
    """The token block stack described by ``HeadConfig.extra`` (None when it asks for no block).

    Keys: ``task_attention`` (``multi_head``/``cbam``/``differential``), ``attention_heads`` (default 4),
    ``ffn`` (``mlp``/``glu``/``geglu``/``swiglu``), ``ffn_expansion_factor`` (default 4), ``norm``
    (default ``layer_norm``).
    """
    attention = _optional(extra.get("task_attention"))
    ffn = _optional(extra.get("ffn"))
    if attention is None and ffn is None:
        return None
    return TokenBlockStack(
        dim,
        attention=attention,
        num_heads=int(extra.get("attention_heads", 4)),
        ffn=ffn,
        expansion_factor=float(extra.get("ffn_expansion_factor", 4)),
        norm=_norm_from_extra(extra),
        dropout=dropout,
    )


def intermediate_from_extra(
    extra: dict[str, Any], dim: int, activation: Callable[[], nn.Module] = nn.GELU, dropout: float = 0.0
) -> IntermediateProjection | None:
    """The post-pooling :class:`IntermediateProjection` named by ``extra["intermediate_size"]`` (None if unset)."""
    size = extra.get("intermediate_size")
    if not size:
        return None
    return IntermediateProjection(dim, int(size), _norm_from_extra(extra), activation, dropout)
