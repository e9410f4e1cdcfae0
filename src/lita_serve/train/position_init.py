"""A position-aware initialisation for a small, randomly initialised LLaMA decoder.

A LLaMA decoder has no absolute position embeddings (RoPE is relative), so where a visual token
sits in the prompt -- which is what a time token ``<tK>`` names -- must be inferred from the
causal attention pattern. A pretrained LLM (LITA's Vicuna) already does that; a tiny random
decoder trained for minutes on a CPU does not find it (its loss stalls at the marginal
distribution of the answers). This initialisation builds the standard "count from the start"
signal into one attention head so training starts from a decoder that knows positions:

* residual dimension ``bos_dim`` is zero for every input except BOS (embedding rows and the
  projector output are zeroed there), so after RMSNorm it is a BOS indicator;
* head 0 of layer 0 has a zero query projection, so it attends uniformly to the causal prefix,
  and its value reads only ``bos_dim``: at position ``p`` its output is ``c / (p + 1)``;
* ``o_proj`` writes that output into residual dimension ``pos_dim`` (zero everywhere else).

Every later layer can therefore read ``1 / (p + 1)``, a strictly decreasing function of the
position, at each visual token and copy it by attention. Nothing of the architecture changes:
the weights keep their shapes and names and training updates all of them.
"""

from __future__ import annotations

import torch

from lita_serve.engine.model import LitaModel

POSITION_GAIN = 1.0  # counting-head output gain


@torch.no_grad()
def init_position_head(model: LitaModel, bos_id: int, gain: float = POSITION_GAIN) -> tuple[int, int]:
    """Install the counting head in ``model`` in place; returns (bos_dim, pos_dim)."""
    decoder = model.decoder
    hidden = decoder.config.hidden_size
    head_dim = hidden // decoder.config.num_attention_heads
    bos_dim, pos_dim = hidden - 1, hidden - 2
    embed = decoder.model.embed_tokens.weight  # [V,H]
    embed[:, [bos_dim, pos_dim]] = 0.0
    embed[bos_id, bos_dim] = 1.0
    projector = model.encoder.mm_projector
    if not isinstance(projector, torch.nn.Linear):
        raise TypeError("the position initialisation expects LITA 1.0's linear projector")
    projector.weight[[bos_dim, pos_dim]] = 0.0  # [H_text, H_vis]
    projector.bias[[bos_dim, pos_dim]] = 0.0
    attn = decoder.model.layers[0].self_attn
    attn.q_proj.weight[:head_dim] = 0.0  # head 0: uniform attention over the prefix
    attn.v_proj.weight[:head_dim] = 0.0
    attn.v_proj.weight[0, bos_dim] = 1.0  # value channel 0 of head 0 = BOS indicator
    attn.o_proj.weight[pos_dim] = 0.0
    attn.o_proj.weight[:, :head_dim] = 0.0
    attn.o_proj.weight[pos_dim, 0] = gain  # -> residual pos_dim = gain * norm(BOS)[bos_dim] / (p + 1)
    for layer in decoder.model.layers:  # nothing else writes into pos_dim at initialisation
        layer.mlp.down_proj.weight[pos_dim] = 0.0
        if layer is not decoder.model.layers[0]:
            layer.self_attn.o_proj.weight[pos_dim] = 0.0
    return bos_dim, pos_dim
