"""chipletc: a model-to-chiplet mapping compiler (see README.md)."""

__version__ = "0.1.0"
