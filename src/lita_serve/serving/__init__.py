"""Running the server: the tritonserver launcher and supervisor, /proc readings, memory per
model process (`lita rss`), the demo, the in-process pipeline."""
