"""Turning user videos into model inputs: decoding, LITA frame sampling, CLIP transform."""
