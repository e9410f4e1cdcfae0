"""The PyTorch engine: the LITA model (encoder + decoder), loading and exporting its weights,
the names of the quantization schemes."""
