"""What the Triton adapters stand on: the model repository's layout, the files that ship with
the package (adapters, demo model), tensor I/O between Triton and the steps."""
