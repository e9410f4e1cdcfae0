"""Released LITA/LLaVA Hugging Face checkpoints: config mapping, weight I/O, load and save."""

from lita_build.checkpoint.hf import load_lita, save_hf_checkpoint, save_vision_tower
from lita_build.checkpoint.hf_config import config_from_hf, config_to_hf
from lita_build.checkpoint.vocab import DEFAULT_VOCAB_MULTIPLE, padded_vocab_size

__all__ = ["DEFAULT_VOCAB_MULTIPLE", "config_from_hf", "config_to_hf", "load_lita", "padded_vocab_size",
           "save_hf_checkpoint", "save_vision_tower"]
