"""Calibration prompts in LITA's own format for quantizing the decoder.

Upstream's quantization examples calibrate on plain text (cnn_dailymail). LITA's decoder sees
something else at serving time: a Vicuna v1 prompt whose middle is a run of visual embeddings
from the vision encoder (the prompt table), then a question about time. The activation ranges
FP8 and SmoothQuant record, and the per-channel saliency AWQ searches, should come from those
inputs, so each calibration sample here is built the way the ``llm`` step builds a request:

1. a synthetic event video (:func:`lita_serve.data.synthetic.random_video_spec`, fixed seed, no
   files written), frames drawn at the model's ``image_size`` and sampled like the preprocess
   step (``sample_frames`` evenly spaced), CLIP-normalised;
2. the model's own vision encoder + projector -> the prompt table ``[N_vis, H]``;
3. :func:`lita_serve.text.prompt.build_input_ids` with a question from
   :func:`lita_serve.data.synthetic.questions_for` (localization or dense captioning);
4. ``decoder.embed(ids, table)`` -> ``inputs_embeds`` ``[1, T, H]``, the batch ModelOpt runs.
"""

from __future__ import annotations

import numpy as np
import torch

from lita_serve.data.synthetic import questions_for, random_video_spec, sampled_pixels
from lita_serve.engine.model import LitaModel
from lita_serve.text.prompt import build_input_ids
from lita_serve.text.tokenizer import LitaTokenizer

CALIBRATION_SEED = 20_251_212


def calibration_frames(model: LitaModel, rng: np.random.Generator) -> tuple[torch.Tensor, list[dict]]:
    """One synthetic video's sampled frames ``[1, F, 3, S, S]`` and its questions."""
    cfg = model.config
    size = cfg.vision.image_size
    spec = random_video_spec(rng, resolutions=((size, size),), duration_range=(5.0, 40.0), fps_range=(4, 8))
    pixels = sampled_pixels(spec, cfg.lita.sample_frames, cfg.vision.image_mean, cfg.vision.image_std)  # [F, 3, S, S]
    return torch.from_numpy(pixels)[None], questions_for(spec)


@torch.inference_mode()
def calibration_batches(model: LitaModel, tokenizer: LitaTokenizer, num_prompts: int, *, device: str = "cpu",
                        dtype: torch.dtype = torch.float32, seed: int = CALIBRATION_SEED) -> list[dict[str, torch.Tensor]]:
    """``num_prompts`` batches ``{"inputs_embeds": [1, T, H]}`` of LITA prompts with visual tokens."""
    rng = np.random.default_rng(seed)
    encoder, decoder = model.encoder.to(device), model.decoder.to(device)
    enc_dtype = next(encoder.parameters()).dtype
    batches: list[dict[str, torch.Tensor]] = []
    while len(batches) < num_prompts:
        pixels, questions = calibration_frames(model, rng)
        table = encoder(pixels.to(device=device, dtype=enc_dtype))[0]  # [N_vis, H]
        question = questions[int(rng.integers(len(questions)))]["question"]
        ids = build_input_ids(tokenizer, question, table.shape[0], decoder.vocab_size,
                              model.config.lita.visual_token_format, options=model.config.prompt)
        embeds = decoder.embed(torch.tensor([ids], device=device), table)  # [1, T, H]
        batches.append({"inputs_embeds": embeds.to(dtype)})
    return batches
