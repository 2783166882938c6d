"""ptycho: dose-response studies of physics-informed ptychographic reconstruction.

Importing this package defines things and does nothing else: no model, no ``tf.Variable``, no GPU
initialisation, no environment variable read. Sub-packages are imported explicitly.
"""

__version__ = "0.1.0"
