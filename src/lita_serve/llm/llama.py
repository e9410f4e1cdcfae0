"""A LLaMA decoder in plain PyTorch with a pre-allocated KV cache.

Module and parameter names equal those of ``transformers.LlamaForCausalLM`` (``model.embed_tokens``,
``model.layers.N.self_attn.q_proj``, ..., ``lm_head``), so a HF state dict loads with an identity key
map for the text part. Padding is handled with per-row positions plus a per-token ``valid`` mask:
padded tokens never enter the cache (they are written to a scratch slot that is never attended to),
so left- and right-padded batches give the same logits for real tokens as unbatched runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lita_serve.config import TextConfig
from lita_serve.errors import InvalidInputError, LimitExceededError


class RMSNorm(nn.Module):
    """Root-mean-square norm computed in float32, as LLaMA does.

    On CUDA it is one fused kernel (``F.rms_norm``, float32 inside) instead of seven: a decode step
    of a 13B decoder runs 81 norms on single tokens, where kernel count, not bytes, sets the time.
    The result differs from the op-by-op form by at most one rounding of the output; the CPU keeps
    the op-by-op form (its answers stay as they were).
    """

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        if x.is_cuda and x.dtype == self.weight.dtype:
            return F.rms_norm(x, self.weight.shape, self.weight, self.eps)
        in_dtype = x.dtype
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(in_dtype)


def rope_cos_sin(positions: Tensor, head_dim: int, theta: float, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """cos/sin tables for rotary embeddings (HF "rotate half" layout). positions [B,T] -> [B,1,T,D] each."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim))
    freqs = positions.float()[..., None] * inv_freq  # [B,T,D/2]
    emb = torch.cat([freqs, freqs], dim=-1)[:, None]  # [B,1,T,D]
    return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate x [B,H,T,D] by the tables [B,1,T,D]."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


def apply_rope_rolled(x: Tensor, cos: Tensor, signed_sin: Tensor) -> Tensor:
    """:func:`apply_rope` in three kernels instead of five: ``rotate_half(x) * sin`` is
    ``roll(x) * signed_sin`` with ``signed_sin = cat(-sin[:D/2], sin[D/2:])`` (exact: only signs move)."""
    return torch.addcmul(x * cos, x.roll(x.shape[-1] // 2, dims=-1), signed_sin)


def additive_mask(mask: Tensor, dtype: torch.dtype) -> Tensor:
    """A boolean mask [..., S] as 0 / -inf in ``dtype``, its rows 16-element aligned so that attention
    kernels take it as it is (made once per step instead of converted and padded in every layer)."""
    width = -(-mask.shape[-1] // 16) * 16
    bias = torch.full((*mask.shape[:-1], width), float("-inf"), dtype=dtype, device=mask.device)
    bias = bias[..., : mask.shape[-1]]
    return bias.masked_fill_(mask, 0.0)


def _fuse(*linears: nn.Linear) -> Tensor:
    """One weight [sum of outputs, in] for ``linears``, whose weights become views of its rows
    (no second copy; their names and the state dict stay as they were)."""
    fused = torch.cat([lin.weight.detach() for lin in linears])
    start = 0
    for lin in linears:
        rows = lin.weight.shape[0]
        lin.weight = nn.Parameter(fused[start : start + rows], requires_grad=False)
        start += rows
    return fused


class KVCache:
    """Keys/values for ``batch_size`` sequences of up to ``max_seq_len`` tokens.

    Slot ``max_seq_len`` is a scratch slot: padded tokens are written there and it is never valid.
    k, v: [L, B, H_kv, S+1, D]; valid: [B, S+1] (True where a real token was written).
    """

    def __init__(self, cfg: TextConfig, batch_size: int, max_seq_len: int, *, dtype: torch.dtype,
                 device: torch.device | str) -> None:
        head_dim = cfg.hidden_size // cfg.num_attention_heads
        shape = (cfg.num_hidden_layers, batch_size, cfg.num_key_value_heads, max_seq_len + 1, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.valid = torch.zeros(batch_size, max_seq_len + 1, dtype=torch.bool, device=device)
        self.max_seq_len = max_seq_len
        self.batch_size = batch_size

    def reset(self) -> None:
        self.valid.zero_()

    def view(self, batch_size: int, max_seq_len: int) -> "KVCache":
        """The first ``batch_size`` rows and ``max_seq_len`` positions, sharing this cache's memory.

        The view's scratch slot is slot ``max_seq_len`` of this cache: a view serves sequences
        that stay below that position (CUDA-graph buckets, :mod:`lita_serve.llm.cuda_graphs`).
        """
        if batch_size > self.batch_size or max_seq_len > self.max_seq_len:
            raise LimitExceededError(f"a view of {batch_size} x {max_seq_len} does not fit a cache of "
                                     f"{self.batch_size} x {self.max_seq_len}")
        view = object.__new__(KVCache)
        view.k = self.k[:, :batch_size, :, : max_seq_len + 1]
        view.v = self.v[:, :batch_size, :, : max_seq_len + 1]
        view.valid = self.valid[:batch_size, : max_seq_len + 1]
        view.max_seq_len, view.batch_size = max_seq_len, batch_size
        return view

    def clear(self) -> None:
        """Zero keys, values and validity (a reused cache then holds nothing of earlier requests)."""
        self.k.zero_()
        self.v.zero_()
        self.valid.zero_()


@dataclass
class _Step:
    """Per-forward indexing shared by every layer."""

    cos: Tensor  # [B,1,T,D]
    sin: Tensor  # [B,1,T,D]; cat(-sin[:D/2], sin[D/2:]) for fused projections (apply_rope_rolled)
    mask: Tensor  # [B,1,T,S] bool, True = attend; 0 / -inf in the model's dtype for fused projections
    rows: Tensor | None  # [B,T] batch index for cache writes
    slots: Tensor | None  # [B,T] cache slot per token (scratch slot for padding)


class Attention(nn.Module):
    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        if cfg.hidden_size % cfg.num_attention_heads or cfg.num_attention_heads % cfg.num_key_value_heads:
            raise ValueError("hidden_size must divide by num_attention_heads, which must divide by num_key_value_heads")
        self.n_heads = cfg.num_attention_heads
        self.n_kv = cfg.num_key_value_heads
        self.head_dim = cfg.hidden_size // cfg.num_attention_heads
        h = cfg.hidden_size
        self.q_proj = nn.Linear(h, self.n_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(h, self.n_kv * self.head_dim, bias=False)
        self.v_proj = nn.Linear(h, self.n_kv * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.n_heads * self.head_dim, h, bias=False)
        self.qkv: Tensor | None = None  # [q; k; v] weight rows, set by LlamaDecoder.fuse_projections

    def forward(self, x: Tensor, step: _Step, cache: KVCache | None, layer: int) -> Tensor:
        b, t, _ = x.shape
        if self.qkv is not None:  # one matmul, one rotation of q and k together
            heads = F.linear(x, self.qkv).view(b, t, self.n_heads + 2 * self.n_kv, self.head_dim).transpose(1, 2)
            qk = apply_rope_rolled(heads[:, : self.n_heads + self.n_kv], step.cos, step.sin)  # [B,Hq+Hkv,T,D]
            q, k, v = qk[:, : self.n_heads], qk[:, self.n_heads :], heads[:, self.n_heads + self.n_kv :]
        else:
            q = self.q_proj(x).view(b, t, self.n_heads, self.head_dim).transpose(1, 2)  # [B,Hq,T,D]
            k = self.k_proj(x).view(b, t, self.n_kv, self.head_dim).transpose(1, 2)  # [B,Hkv,T,D]
            v = self.v_proj(x).view(b, t, self.n_kv, self.head_dim).transpose(1, 2)
            q, k = apply_rope(q, step.cos, step.sin), apply_rope(k, step.cos, step.sin)
        if cache is not None:
            # advanced indexing on dims 0 and 2 puts [B,T] first: assign [B,T,Hkv,D]
            cache.k[layer][step.rows, :, step.slots] = k.transpose(1, 2).to(cache.k.dtype)
            cache.v[layer][step.rows, :, step.slots] = v.transpose(1, 2).to(cache.v.dtype)
            k, v = cache.k[layer].to(q.dtype), cache.v[layer].to(q.dtype)  # [B,Hkv,S+1,D]
        rep = self.n_heads // self.n_kv
        if rep > 1:
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=step.mask)  # [B,Hq,T,D]
        return self.o_proj(out.transpose(1, 2).reshape(b, t, self.n_heads * self.head_dim))


class MLP(nn.Module):
    """SwiGLU feed-forward."""

    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)
        self.gate_up: Tensor | None = None  # [gate; up] weight rows, set by LlamaDecoder.fuse_projections

    def forward(self, x: Tensor) -> Tensor:
        if self.gate_up is not None:
            gate, up = F.linear(x, self.gate_up).chunk(2, dim=-1)
            return self.down_proj(F.silu(gate) * up)
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        self.self_attn = Attention(cfg)
        self.mlp = MLP(cfg)
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def forward(self, x: Tensor, step: _Step, cache: KVCache | None, layer: int) -> Tensor:
        x = x + self.self_attn(self.input_layernorm(x), step, cache, layer)
        return x + self.mlp(self.post_attention_layernorm(x))


class LlamaBody(nn.Module):
    """Embedding table, decoder layers and final norm (HF's ``LlamaModel``)."""

    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class LlamaDecoder(nn.Module):
    """LLaMA causal LM: ``embed`` ids (with a prompt table) then ``forward`` embeddings to logits."""

    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        self.config = cfg
        self.model = LlamaBody(cfg)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.fused = False

    @property
    def vocab_size(self) -> int:
        return self.model.embed_tokens.num_embeddings

    def new_cache(self, batch_size: int, max_seq_len: int | None = None) -> KVCache:
        """A zeroed cache in this model's dtype/device; max_seq_len defaults to max_position_embeddings."""
        length = max_seq_len or self.config.max_position_embeddings
        if length > self.config.max_position_embeddings:
            raise LimitExceededError(
                f"max_seq_len {length} exceeds max_position_embeddings {self.config.max_position_embeddings}")
        weight = self.lm_head.weight
        return KVCache(self.config, batch_size, length, dtype=weight.dtype, device=weight.device)

    def fuse_projections(self) -> "LlamaDecoder":
        """One matmul for q, k and v and one for gate and up in every layer, the rotation of q and k
        in one pass, and the attention mask made additive once per step: about a third fewer kernels
        per decode step, which on a GPU is time (the weights are read as before). Numerics move by
        roundings (one GEMM shape for three, one fused multiply-add); the CPU does not use it."""
        with torch.no_grad():
            for layer in self.model.layers:
                attn, mlp = layer.self_attn, layer.mlp
                attn.qkv = _fuse(attn.q_proj, attn.k_proj, attn.v_proj)
                mlp.gate_up = _fuse(mlp.gate_proj, mlp.up_proj)
        self.fused = True
        return self

    def embed(self, input_ids: Tensor, prompt_table: Tensor | None = None) -> Tensor:
        """ids [B,T] -> embeddings [B,T,H].

        TensorRT-LLM prompt-tuning convention: an id ``>= vocab_size`` selects row ``id - vocab_size``
        of ``prompt_table`` ([N_vis,H], or [B,N_vis,H] for one table per row); others use the
        embedding table.
        """
        vocab = self.vocab_size
        n_prompt = 0 if prompt_table is None else prompt_table.shape[-2]
        if input_ids.numel() and (int(input_ids.min()) < 0 or int(input_ids.max()) >= vocab + n_prompt):
            raise InvalidInputError(
                f"input_ids out of range [0, {vocab + n_prompt}) (vocab {vocab} + {n_prompt} prompt-table rows)")
        is_prompt = input_ids >= vocab
        out = self.model.embed_tokens(torch.where(is_prompt, 0, input_ids))  # [B,T,H]
        if prompt_table is None or not bool(is_prompt.any()):
            return out
        table = prompt_table.to(out.dtype)
        if table.dim() == 2:
            table = table.unsqueeze(0).expand(input_ids.shape[0], -1, -1)  # [B,N_vis,H]
        rows = torch.arange(input_ids.shape[0], device=input_ids.device)[:, None].expand_as(input_ids)
        picked = table[rows, (input_ids - vocab).clamp(min=0)]  # [B,T,H]
        return torch.where(is_prompt[..., None], picked, out)

    def _step(self, positions: Tensor, valid: Tensor, cache: KVCache | None, dtype: torch.dtype,
              check: bool = True) -> _Step:
        b, t = positions.shape
        head_dim = self.config.hidden_size // self.config.num_attention_heads
        cos, sin = rope_cos_sin(positions, head_dim, self.config.rope_theta, dtype)
        if cache is None:
            rows = slots = None
            key_pos, key_valid = positions, valid  # keys are this call's tokens
        else:
            if b != cache.batch_size:
                raise InvalidInputError(f"batch size {b} does not match the cache's {cache.batch_size}")
            if check and (bool((positions[valid] >= cache.max_seq_len).any()) or bool((positions[valid] < 0).any())):
                raise LimitExceededError(f"position outside the cache (max_seq_len {cache.max_seq_len})")
            rows = torch.arange(b, device=positions.device)[:, None].expand(b, t)
            slots = torch.where(valid, positions, cache.max_seq_len)  # padding -> scratch slot
            cache.valid[rows, slots] = valid
            cache.valid[:, cache.max_seq_len] = False
            key_pos = torch.arange(cache.max_seq_len + 1, device=positions.device).expand(b, -1)
            key_valid = cache.valid
        mask = key_valid[:, None, :] & (key_pos[:, None, :] <= positions[:, :, None])  # [B,T,S]
        mask = mask | ~valid[:, :, None]  # padded queries attend everywhere (finite, ignored)
        if self.fused:
            half = head_dim // 2
            sin = torch.cat([-sin[..., :half], sin[..., half:]], dim=-1)
            return _Step(cos, sin, additive_mask(mask[:, None], dtype), rows, slots)
        return _Step(cos, sin, mask[:, None], rows, slots)

    def forward(self, input_embeds: Tensor, positions: Tensor, cache: KVCache | None = None,
                valid: Tensor | None = None, output_index: Tensor | None = None, check: bool = True) -> Tensor:
        """Embeddings [B,T,H] at positions [T] or [B,T] -> logits [B,T,V] (float32).

        valid [B,T] bool marks real tokens (default all); padded tokens neither enter the cache nor
        are attended to. With a cache, tokens are written at slot == position, so a decode step only
        passes the new token(s). output_index [B] selects one position per row: logits [B,1,V].
        ``check=False`` skips the host-side position check (it synchronises with the device, which a
        CUDA graph capture forbids); the caller then guarantees that positions fit the cache.
        """
        b, t, _ = input_embeds.shape
        if positions.dim() == 1:
            positions = positions[None].expand(b, t)
        positions = positions.to(device=input_embeds.device, dtype=torch.long)
        if valid is None:
            valid = torch.ones(b, t, dtype=torch.bool, device=input_embeds.device)
        step = self._step(positions, valid.to(input_embeds.device), cache, input_embeds.dtype, check)
        x = input_embeds
        for i, layer in enumerate(self.model.layers):
            x = layer(x, step, cache, i)
        if output_index is not None:
            x = x[torch.arange(b, device=x.device), output_index.to(x.device)][:, None]  # [B,1,H]
        return self.lm_head(self.model.norm(x)).float()
