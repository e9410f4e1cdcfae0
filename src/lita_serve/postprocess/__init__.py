"""The postprocess step: generated token ids -> text with times in seconds, and segments."""
