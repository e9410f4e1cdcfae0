"""Training a small LITA model on synthetic event videos (CPU demo)."""
