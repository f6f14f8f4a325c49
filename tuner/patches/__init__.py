"""Changes to other libraries' behaviour, fenced together: Keras' dropout masks drawn with
XLA's Philox generator (`dropout`), model weights drawn with NumPy (`initializers`), and Keras
imported without TensorFlow's start-up noise or, on JAX, without TensorFlow (`quiet`). Each
checks the upstream names it leans on and has tests of that assumption.

Layer 2 of tuner. May import: tuner.errors.
"""
