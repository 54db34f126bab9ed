"""The NeuronSet file: which neurons are "math neurons", with the statistics stage 3 needs.

Format (JSON, one file, `format: yfpo.neuronset/v2`):

    {
      "format": "yfpo.neuronset/v2",
      "provenance": {model, model_type, weight_hash, num_layers, intermediate_size, method, target,
                     corpora: {math: {name, n}, contrast: {name, n}}, k, selection, tool_version, date,
                     positions, ...},
      "neurons": [{"layer": int, "index": int, "score": float, "mean": float, "std": float}, ...]
    }

`score` is the math score (mean normalised math relevance minus contrast relevance); its sign is
`s_lj` in SPEC section 3. `mean` / `std` are the neuron's activation statistics on the identification
corpus, used to standardise activations in the neuron reward.

Positions (v2): the statistics are taken at the positions of the response tokens themselves
(`provenance.positions = "response_tokens"`), the positions whose activations phi averages in stage 3.
v1 files took them one position to the left (last prompt token .. second-to-last response token); they
still load, with a warning.

Sigma floor: a near-dead neuron (std 1e-6) would dominate phi, so the std used for standardisation is
floored at SIGMA_FLOOR x the set's median std: `std = max(std_raw, 0.1 * median(std_raw))`. The file keeps
the raw std; the floor is applied on construction (and on load), and `sigma_floor()` says what it did.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

FORMAT = "yfpo.neuronset/v2"
OLD_FORMATS = ("yfpo.neuronset/v1",)
SIGMA_FLOOR = 0.1  # std is floored at this fraction of the set's median std


class NeuronSetError(ValueError):
    pass


@dataclass
class NeuronSet:
    layers: torch.Tensor  # (K,) long
    indices: torch.Tensor  # (K,) long
    scores: torch.Tensor  # (K,) float32
    mean: torch.Tensor  # (K,) float32
    std: torch.Tensor  # (K,) float32, floored (see the module docstring); the unfloored values: std_raw
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.layers = torch.as_tensor(self.layers, dtype=torch.long)
        self.indices = torch.as_tensor(self.indices, dtype=torch.long)
        self.scores = torch.as_tensor(self.scores, dtype=torch.float32)
        self.mean = torch.as_tensor(self.mean, dtype=torch.float32)
        self.std_raw = torch.as_tensor(self.std, dtype=torch.float32)
        n = len(self.layers)
        for name in ("indices", "scores", "mean", "std_raw"):
            if len(getattr(self, name)) != n:
                raise NeuronSetError(f"NeuronSet: {name} has {len(getattr(self, name))} entries, layers has {n}")
        self.std = floor_sigma(self.std_raw)

    def sigma_floor(self) -> dict[str, Any]:
        """What the floor did: the rule, the median raw std, the floor value and how many neurons it raised."""
        floor = SIGMA_FLOOR * float(self.std_raw.median()) if len(self) else 0.0
        return {
            "rule": f"std = max(std_raw, {SIGMA_FLOOR} * median(std_raw))",
            "median_std": float(self.std_raw.median()) if len(self) else None,
            "floor": floor,
            "n_floored": int((self.std_raw < floor).sum()),
        }

    def __len__(self) -> int:
        return len(self.layers)

    @property
    def signs(self) -> torch.Tensor:
        """s_lj = sign of the math score (+1 for a zero score)."""
        return torch.where(self.scores < 0, -1.0, 1.0)

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.provenance["num_layers"]), int(self.provenance["intermediate_size"])

    def by_layer(self) -> dict[int, torch.Tensor]:
        """{layer: positions (into this set) of its neurons}, layers in increasing order."""
        out: dict[int, torch.Tensor] = {}
        for layer in sorted(set(self.layers.tolist())):
            out[layer] = (self.layers == layer).nonzero().flatten()
        return out

    def per_layer_counts(self) -> list[int]:
        n_layers = self.shape[0]
        counts = torch.bincount(self.layers, minlength=n_layers)
        return counts.tolist()

    # ------------------------------------------------------------------ io
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "provenance": {**self.provenance, "sigma_floor": self.sigma_floor()},
            "neurons": [
                {"layer": int(l), "index": int(i), "score": float(s), "mean": float(m), "std": float(d)}
                for l, i, s, m, d in zip(self.layers, self.indices, self.scores, self.mean, self.std_raw)
            ],
        }

    def save(self, path: str | os.PathLike) -> Path:
        from yfpo.utils import atomic_write_json

        for key in ("num_layers", "intermediate_size"):
            if key not in self.provenance:
                raise NeuronSetError(f"NeuronSet.save: provenance needs {key!r}")
        path = Path(path)
        atomic_write_json(path, self.to_dict())
        return path

    @classmethod
    def load(
        cls, path: str | os.PathLike, model: torch.nn.Module | None = None, allow_other_weights: bool = False
    ) -> "NeuronSet":
        """Read a NeuronSet file; with `model`, refuse it unless the model's family and neuron grid match, and
        (check_weights) unless its weights are the ones the set was found on or allow_other_weights."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"NeuronSet file {path} does not exist")
        try:
            d = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise NeuronSetError(f"{path}: not valid JSON ({e.msg}, line {e.lineno})") from None
        fmt = d.get("format") if isinstance(d, dict) else None
        if fmt != FORMAT and fmt not in OLD_FORMATS:
            raise NeuronSetError(
                f"{path}: field 'format' must be {FORMAT!r}, got {fmt if isinstance(d, dict) else d!r}"
            )
        prov = d.get("provenance")
        if not isinstance(prov, dict) or "num_layers" not in prov or "intermediate_size" not in prov:
            raise NeuronSetError(f"{path}: field 'provenance' must hold num_layers and intermediate_size")
        if fmt in OLD_FORMATS:
            warnings.warn(
                f"{path}: {fmt} NeuronSet: its activation mean/std were taken one position left of the "
                "response tokens (last prompt token .. second-to-last response token), not at the "
                "response tokens phi uses; rerun `yfpo neurons find` for a v2 file",
                stacklevel=2,
            )
            prov = {**prov, "positions": prov.get("positions", "target_positions (v1)")}
        rows = d.get("neurons")
        if not isinstance(rows, list) or not rows:
            raise NeuronSetError(f"{path}: field 'neurons' must be a non-empty list")
        cols: dict[str, list] = {k: [] for k in ("layer", "index", "score", "mean", "std")}
        L, W = int(prov["num_layers"]), int(prov["intermediate_size"])
        seen: dict[tuple[int, int], int] = {}
        for i, r in enumerate(rows):
            _check_row(path, i, r)
            for k in cols:
                cols[k].append(r[k])
            if (r["layer"], r["index"]) in seen:
                raise NeuronSetError(
                    f"{path}: duplicate neuron: neurons[{i}] = (layer {r['layer']}, index {r['index']}) repeats "
                    f"neurons[{seen[r['layer'], r['index']]}]; each neuron may appear once"
                )
            seen[r["layer"], r["index"]] = i
            if not (0 <= r["layer"] < L and 0 <= r["index"] < W):
                raise NeuronSetError(
                    f"{path}: neurons[{i}] = (layer {r['layer']}, index {r['index']}) is outside "
                    f"the {L} x {W} grid named in provenance"
                )
            if not r["std"] > 0:
                raise NeuronSetError(f"{path}: neurons[{i}].std must be > 0, got {r['std']}")
        ns = cls(cols["layer"], cols["index"], cols["score"], cols["mean"], cols["std"], prov)
        if model is not None:
            ns.check_model(model, where=str(path))
            ns.check_weights(model, where=str(path), allow_other_weights=allow_other_weights)
        return ns

    def check_weights(
        self, model: torch.nn.Module, where: str = "NeuronSet", allow_other_weights: bool = False
    ) -> None:
        """Refuse a model whose weights differ from provenance.weight_hash (another checkpoint of the same shape).
        Compared only when the set records a hash and the model has the dtype the set was found in (the hash
        is over the weight bytes); otherwise a warning says it was not compared."""
        import warnings

        from yfpo.models import arch
        from yfpo.models.loading import state_hash

        want = self.provenance.get("weight_hash")
        found_dtype = (self.provenance.get("config") or {}).get("dtype", "float32")
        dtype = str(next(arch.unwrap(model).parameters()).dtype).replace("torch.", "")
        if want is None or allow_other_weights:
            return
        if {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}.get(found_dtype, found_dtype) != dtype:
            warnings.warn(
                f"{where}: weights not compared with weight_hash (found in {found_dtype}, model is {dtype})",
                stacklevel=2,
            )
            return
        got = state_hash(arch.unwrap(model))
        if got != want:
            raise NeuronSetError(
                f"{where} was found on weights {want} ({self.provenance.get('model', '?')}), but this "
                f"model's weights hash to {got}: find neurons for this model, or pass "
                "--allow-other-weights to use the set anyway"
            )

    def check_model(self, model: torch.nn.Module, where: str = "NeuronSet") -> None:
        from yfpo.models import arch

        L, W = arch.neuron_shape(model)
        want_L, want_W = self.shape
        fam = arch.get_arch(arch.unwrap(model)).family
        want_fam = self.provenance.get("family")
        if (L, W) != (want_L, want_W) or (want_fam is not None and want_fam != fam):
            raise NeuronSetError(
                f"{where} was made for a {want_fam or '?'} model with {want_L} layers x {want_W} neurons "
                f"({self.provenance.get('model', '?')}), but this model is {fam} with {L} x {W}; "
                "find neurons for this model first (yfpo neurons find)."
            )


def floor_sigma(std: torch.Tensor, frac: float = SIGMA_FLOOR) -> torch.Tensor:
    """std floored at `frac` x its median: max(std, frac * median(std)). Idempotent (the median is unchanged)."""
    std = torch.as_tensor(std, dtype=torch.float32)
    if std.numel() == 0:
        return std
    return std.clamp_min(frac * float(std.median()))


def _check_row(path: Path, i: int, r: Any) -> None:
    """One neurons[] entry: layer/index JSON integers (not bools, not floats), the rest finite numbers."""
    import math

    if not isinstance(r, dict):
        raise NeuronSetError(f"{path}: neurons[{i}] must be an object with layer, index, score, mean, std")
    for k in ("layer", "index"):
        if k not in r or isinstance(r[k], bool) or not isinstance(r[k], int):
            raise NeuronSetError(f"{path}: neurons[{i}].{k} must be an integer, got {r.get(k)!r}")
    for k in ("score", "mean", "std"):
        v = r.get(k)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise NeuronSetError(f"{path}: neurons[{i}].{k} must be a finite number, got {v!r}")
