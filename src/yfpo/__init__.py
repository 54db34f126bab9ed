"""yfpo: neuron-guided preference optimization for mathematical reasoning."""

__version__ = "0.1.0"
