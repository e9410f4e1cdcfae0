"""Text and prompts: LITA's time tokens and special tokens, the tokenizer, the conversation
templates, prompt ids, token log-probabilities."""
