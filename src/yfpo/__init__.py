"""yfpo: neuron-guided preference optimization for mathematical reasoning."""

from yfpo.version import __version__

__all__ = ["__version__"]
