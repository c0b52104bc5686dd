"""fairseq's ``transformer_iwslt_de_en`` encoder-decoder in plain torch (Vaswani et al., 2017).

Shapes and initialisation follow fairseq as of the paper (mid-2019):

* tokens are embedded as ``sqrt(d) * E[x] + P[pos]`` then dropped out, where ``P`` is fairseq's
  ``SinusoidalPositionalEmbedding``: position ``p`` of a non-padding token counts from
  ``padding_idx + 1`` and ``P[p] = [sin(p w_i), cos(p w_i)]`` with ``w_i = 10000^(-i / (d/2 - 1))``;
  padding tokens get a zero vector;
* post-LN layers ``x = LN(x + drop(f(x)))`` (``pre_norm``: ``x = x + drop(f(LN(x)))`` plus a final
  LayerNorm after the encoder and the decoder), ReLU feed-forward, attention through
  :func:`torch.nn.functional.scaled_dot_product_attention`;
* xavier-uniform projection weights with zero biases (the packed q/k/v matrix initialised as one
  ``3d x d`` matrix), embeddings and the output matrix ``N(0, d^-1/2)`` with a zero padding row.

The decoder keeps per-layer key/value caches for incremental decoding (beam search).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class Architecture:
    """The architecture's hyperparameters; defaults are ``transformer_iwslt_de_en`` (dropout as the paper's recipe)."""

    d_model: int = 512
    ffn_dim: int = 1024
    heads: int = 4
    encoder_layers: int = 6
    decoder_layers: int = 6
    dropout: float = 0.3
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0
    pre_norm: bool = False
    share_decoder_input_output_embed: bool = False
    share_all_embeddings: bool = False
    max_positions: int = 1024


@dataclass
class TransformerConfig(Architecture):
    """An :class:`Architecture` for given dictionaries."""

    src_vocab_size: int = field(kw_only=True)
    tgt_vocab_size: int = field(kw_only=True)
    padding_idx: int = field(default=1, kw_only=True)


class EncoderOut(NamedTuple):
    out: Tensor  # (batch, src_len, d_model)
    padding_mask: Tensor  # (batch, src_len), True at padding


def xavier_linear(in_features: int, out_features: int) -> nn.Linear:
    """fairseq's ``Linear``: xavier-uniform weight, zero bias."""
    linear = nn.Linear(in_features, out_features)
    nn.init.xavier_uniform_(linear.weight)
    nn.init.zeros_(linear.bias)
    return linear


def scaled_embedding(num_embeddings: int, dim: int, padding_idx: int) -> nn.Embedding:
    """fairseq's ``Embedding``: N(0, dim^-1/2) with a zero padding row."""
    embedding = nn.Embedding(num_embeddings, dim, padding_idx=padding_idx)
    nn.init.normal_(embedding.weight, mean=0.0, std=dim**-0.5)
    with torch.no_grad():
        embedding.weight[padding_idx].zero_()
    return embedding


def sinusoidal_positions(tokens: Tensor, dim: int, padding_idx: int, offset: int = 0) -> Tensor:
    """fairseq ``SinusoidalPositionalEmbedding`` of ``tokens`` (batch, len) -> (batch, len, dim).

    ``offset`` shifts the positions (incremental decoding feeds one token at a time).
    """
    not_pad = tokens.ne(padding_idx)
    positions = (torch.cumsum(not_pad, dim=1) + offset) * not_pad + padding_idx
    half = dim // 2
    freqs = torch.exp(torch.arange(half, device=tokens.device, dtype=torch.float) * -(math.log(10000.0) / (half - 1)))
    angles = positions.unsqueeze(-1).float() * freqs
    table = torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)
    if dim % 2:
        table = F.pad(table, (0, 1))
    return table * not_pad.unsqueeze(-1)


class MultiheadAttention(nn.Module):
    """Multi-head attention with a packed q/k/v projection (fairseq 2019 layout and init)."""

    def __init__(self, d_model: int, heads: int, dropout: float):
        super().__init__()
        if d_model % heads:
            raise ValueError(f"d_model={d_model} must be divisible by heads={heads}")
        self.heads, self.dropout = heads, dropout
        self.in_proj_weight = nn.Parameter(torch.empty(3 * d_model, d_model))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * d_model))
        nn.init.xavier_uniform_(self.in_proj_weight)
        self.out_proj = xavier_linear(d_model, d_model)

    def _split(self, x: Tensor) -> Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, self.heads, -1).transpose(1, 2)

    def project_kv(self, memory: Tensor) -> tuple[Tensor, Tensor]:
        """Keys and values of ``memory`` (batch, len, d) as (batch, heads, len, d/heads)."""
        d = memory.size(-1)
        k, v = F.linear(memory, self.in_proj_weight[d:], self.in_proj_bias[d:]).chunk(2, dim=-1)
        return self._split(k), self._split(v)

    def forward(
        self,
        query: Tensor,
        kv: tuple[Tensor, Tensor] | None = None,
        key_padding_mask: Tensor | None = None,
        causal: bool = False,
        cache: dict[str, Tensor] | None = None,
    ) -> Tensor:
        """Self-attention when ``kv`` is None (keys appended to ``cache`` if given), else attention to ``kv``."""
        d = query.size(-1)
        if kv is None:
            q, k, v = (self._split(t) for t in F.linear(query, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1))
            if cache is not None:
                if "k" in cache:
                    k, v = torch.cat([cache["k"], k], dim=2), torch.cat([cache["v"], v], dim=2)
                cache["k"], cache["v"] = k, v
                causal = False  # one new query attends to every cached key
        else:
            q = self._split(F.linear(query, self.in_proj_weight[:d], self.in_proj_bias[:d]))
            k, v = kv
        mask = None if key_padding_mask is None else ~key_padding_mask[:, None, None, :]
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0, is_causal=causal
        )
        return self.out_proj(out.transpose(1, 2).flatten(2))


class FeedForward(nn.Module):
    def __init__(self, d_model: int, ffn_dim: int, activation_dropout: float):
        super().__init__()
        self.fc1, self.fc2 = xavier_linear(d_model, ffn_dim), xavier_linear(ffn_dim, d_model)
        self.activation_dropout = activation_dropout

    def forward(self, x: Tensor) -> Tensor:
        hidden = F.dropout(F.relu(self.fc1(x)), self.activation_dropout, self.training)
        return self.fc2(hidden)


class Residual(nn.Module):
    """``LN(x + drop(f(x)))`` (post-LN) or ``x + drop(f(LN(x)))`` (pre-LN) around a sublayer call."""

    def __init__(self, d_model: int, dropout: float, pre_norm: bool):
        super().__init__()
        self.norm, self.dropout, self.pre_norm = nn.LayerNorm(d_model), dropout, pre_norm

    def forward(self, x: Tensor, sublayer) -> Tensor:
        if self.pre_norm:
            return x + F.dropout(sublayer(self.norm(x)), self.dropout, self.training)
        return self.norm(x + F.dropout(sublayer(x), self.dropout, self.training))


class EncoderLayer(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.self_attn = MultiheadAttention(cfg.d_model, cfg.heads, cfg.attention_dropout)
        self.ffn = FeedForward(cfg.d_model, cfg.ffn_dim, cfg.activation_dropout)
        self.attn_block = Residual(cfg.d_model, cfg.dropout, cfg.pre_norm)
        self.ffn_block = Residual(cfg.d_model, cfg.dropout, cfg.pre_norm)

    def forward(self, x: Tensor, padding_mask: Tensor) -> Tensor:
        x = self.attn_block(x, lambda h: self.self_attn(h, key_padding_mask=padding_mask))
        return self.ffn_block(x, self.ffn)


class DecoderLayer(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.self_attn = MultiheadAttention(cfg.d_model, cfg.heads, cfg.attention_dropout)
        self.encoder_attn = MultiheadAttention(cfg.d_model, cfg.heads, cfg.attention_dropout)
        self.ffn = FeedForward(cfg.d_model, cfg.ffn_dim, cfg.activation_dropout)
        self.self_attn_block = Residual(cfg.d_model, cfg.dropout, cfg.pre_norm)
        self.encoder_attn_block = Residual(cfg.d_model, cfg.dropout, cfg.pre_norm)
        self.ffn_block = Residual(cfg.d_model, cfg.dropout, cfg.pre_norm)

    def forward(self, x: Tensor, encoder: EncoderOut, cache: dict[str, Tensor] | None) -> Tensor:
        x = self.self_attn_block(x, lambda h: self.self_attn(h, causal=True, cache=cache))
        if cache is not None and "encoder_kv" not in cache:
            cache["encoder_kv"] = self.encoder_attn.project_kv(encoder.out)
        kv = cache["encoder_kv"] if cache is not None else self.encoder_attn.project_kv(encoder.out)
        x = self.encoder_attn_block(x, lambda h: self.encoder_attn(h, kv=kv, key_padding_mask=encoder.padding_mask))
        return self.ffn_block(x, self.ffn)


class DecoderCache:
    """Per-layer self-attention keys/values and encoder keys/values for incremental decoding."""

    def __init__(self, layers: int):
        self.layers: list[dict] = [{} for _ in range(layers)]
        self.steps = 0

    def reorder(self, order: Tensor) -> None:
        """Keep rows ``order`` of every cached tensor (beam selection / finished sentences)."""
        for layer in self.layers:
            for key, value in layer.items():
                layer[key] = (
                    tuple(t.index_select(0, order) for t in value)
                    if isinstance(value, tuple)
                    else value.index_select(0, order)
                )


class Transformer(nn.Module):
    """Encoder-decoder; ``forward(src, prev_output_tokens)`` returns logits (batch, tgt_len, vocab)."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.cfg = cfg
        d, pad = cfg.d_model, cfg.padding_idx
        self.embed_scale = math.sqrt(d)
        self.encoder_embed = scaled_embedding(cfg.src_vocab_size, d, pad)
        if cfg.share_all_embeddings:
            if cfg.src_vocab_size != cfg.tgt_vocab_size:
                raise ValueError(
                    "share_all_embeddings needs one joined dictionary (equal source/target vocabulary sizes)"
                )
            self.decoder_embed = self.encoder_embed
        else:
            self.decoder_embed = scaled_embedding(cfg.tgt_vocab_size, d, pad)
        self.tied_output = cfg.share_all_embeddings or cfg.share_decoder_input_output_embed
        if not self.tied_output:
            self.output_projection = nn.Parameter(torch.empty(cfg.tgt_vocab_size, d).normal_(0.0, d**-0.5))
        self.encoder_layers = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.encoder_layers))
        self.decoder_layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.decoder_layers))
        self.encoder_norm = nn.LayerNorm(d) if cfg.pre_norm else nn.Identity()
        self.decoder_norm = nn.LayerNorm(d) if cfg.pre_norm else nn.Identity()

    @property
    def output_weight(self) -> Tensor:
        return self.decoder_embed.weight if self.tied_output else self.output_projection

    def _embed(self, embedding: nn.Embedding, tokens: Tensor, offset: int = 0) -> Tensor:
        x = self.embed_scale * embedding(tokens)
        x = x + sinusoidal_positions(tokens, self.cfg.d_model, self.cfg.padding_idx, offset).to(x.dtype)
        return F.dropout(x, self.cfg.dropout, self.training)

    def encode(self, src_tokens: Tensor) -> EncoderOut:
        padding_mask = src_tokens.eq(self.cfg.padding_idx)
        x = self._embed(self.encoder_embed, src_tokens)
        x = x * (~padding_mask).unsqueeze(-1).to(x.dtype)
        for layer in self.encoder_layers:
            x = layer(x, padding_mask)
        return EncoderOut(self.encoder_norm(x), padding_mask)

    def decode(self, prev_output_tokens: Tensor, encoder: EncoderOut, cache: DecoderCache | None = None) -> Tensor:
        """Logits for every decoder position; with ``cache``, only for the newest token."""
        if cache is not None:
            prev_output_tokens = prev_output_tokens[:, -1:]
        x = self._embed(self.decoder_embed, prev_output_tokens, offset=cache.steps if cache is not None else 0)
        for i, layer in enumerate(self.decoder_layers):
            x = layer(x, encoder, cache.layers[i] if cache is not None else None)
        if cache is not None:
            cache.steps += 1
        return F.linear(self.decoder_norm(x), self.output_weight)

    def forward(self, src_tokens: Tensor, prev_output_tokens: Tensor) -> Tensor:
        return self.decode(prev_output_tokens, self.encode(src_tokens))

    def new_cache(self) -> DecoderCache:
        return DecoderCache(len(self.decoder_layers))

    @staticmethod
    def reorder_encoder_out(encoder: EncoderOut, order: Tensor) -> EncoderOut:
        return EncoderOut(encoder.out.index_select(0, order), encoder.padding_mask.index_select(0, order))
