"""Data: benchmark loaders (Problem), preference-pair formats, corpora for neuron discovery."""

from yfpo.data.pairs import Pair, load_pairs, validate_pair, write_pairs
from yfpo.data.problems import BENCHMARKS, DataFormatError, DataNotFoundError, Problem, load_benchmark, read_jsonl

__all__ = [
    "BENCHMARKS",
    "DataFormatError",
    "DataNotFoundError",
    "Pair",
    "Problem",
    "load_benchmark",
    "load_pairs",
    "read_jsonl",
    "validate_pair",
    "write_pairs",
]
