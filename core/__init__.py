"""The lowest layer: what every other package may import, and which imports none of them.

``core.compat`` is the one door to the private internals of Keras,
keras-tuner, TensorFlow and argparse that the project relies on.
"""
