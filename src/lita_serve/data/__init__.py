"""Training and evaluation data: synthetic event videos, public annotation readers, LITA's train format.

Import the submodules directly (``lita_serve.data.synthetic``, ...); this package does not pull
them in eagerly, so reading annotations never needs a video encoder installed.
"""
