"""Guard: `configs/quick.yaml`'s stage hashes are pinned. Every stage folder's name carries the hash of its config
and inputs; a refactor that changes one (a new config field in the hash, a renamed key, another model
fingerprint) would make every existing run redo that stage and everything downstream, and would stop
`quick.yaml` from reproducing its committed numbers. The expected values below were computed by the code of
main at 3d58b93 (before the pipeline became a graph). A deliberate change of a hash needs a stated one-time
migration, and then these values are updated in the same commit.

The plan is built by the real code path (load_run_config -> the pipeline) with the stage functions replaced by
fakes that write the files each stage's successors read; hashes do not depend on what the stages produce."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from yfpo.neurons.find import work_dir_for
from yfpo.neurons.neuronset import NeuronSet
from yfpo.run import load_run_config, run_pipeline

QUICK = Path(__file__).resolve().parents[1] / "configs" / "quick.yaml"

# stage name -> (kind, folder relative to the run dir); the folder's name ends with the stage's hash
EXPECTED = {
    "neurons": ("neurons", "stages/neurons-dd7801a96e"),
    "neurons/random-s0": ("neurons_control", "stages/neurons-random-71a39602c6"),
    "check": ("check", "stages/check-12d98be562"),
    "pairs": ("pairs", "stages/pairs-c2c35974a4"),
    "reference": ("reference", "stages/reference-4e4cf9c722"),
    "train/dpo-s0": ("train", "train/dpo-s0-b12ef589e3"),
    "train/yfpo-s0": ("train", "train/yfpo-s0-6bb1c83490"),
    "train/yfpo_random-s0": ("train", "train/yfpo_random-s0-33408cd8c3"),
    "train/dpo_fdt-s0": ("train", "train/dpo_fdt-s0-9c2c45690f"),
    "train/yfpo_fdt-s0": ("train", "train/yfpo_fdt-s0-a2c26e276c"),
    "eval/base/gsm8k": ("eval", "eval/base-385bad51a5/gsm8k"),
    "eval/base/mawps_singleop": ("eval", "eval/base-385bad51a5/mawps_singleop"),
    "eval/base/discrimination": ("discrimination", "eval/base-385bad51a5/discrimination"),
    "eval/dpo-s0/gsm8k": ("eval", "eval/dpo-s0-3778bf5a0f/gsm8k"),
    "eval/dpo-s0/mawps_singleop": ("eval", "eval/dpo-s0-3778bf5a0f/mawps_singleop"),
    "eval/dpo-s0/discrimination": ("discrimination", "eval/dpo-s0-3778bf5a0f/discrimination"),
    "eval/yfpo-s0/gsm8k": ("eval", "eval/yfpo-s0-37cb6162ac/gsm8k"),
    "eval/yfpo-s0/mawps_singleop": ("eval", "eval/yfpo-s0-37cb6162ac/mawps_singleop"),
    "eval/yfpo-s0/discrimination": ("discrimination", "eval/yfpo-s0-37cb6162ac/discrimination"),
    "eval/yfpo_random-s0/gsm8k": ("eval", "eval/yfpo_random-s0-4cca792e05/gsm8k"),
    "eval/yfpo_random-s0/mawps_singleop": ("eval", "eval/yfpo_random-s0-4cca792e05/mawps_singleop"),
    "eval/yfpo_random-s0/discrimination": ("discrimination", "eval/yfpo_random-s0-4cca792e05/discrimination"),
    "eval/dpo_fdt-s0/gsm8k": ("eval", "eval/dpo_fdt-s0-aeabd927e5/gsm8k"),
    "eval/dpo_fdt-s0/mawps_singleop": ("eval", "eval/dpo_fdt-s0-aeabd927e5/mawps_singleop"),
    "eval/dpo_fdt-s0/discrimination": ("discrimination", "eval/dpo_fdt-s0-aeabd927e5/discrimination"),
    "eval/yfpo_fdt-s0/gsm8k": ("eval", "eval/yfpo_fdt-s0-5ec16fe337/gsm8k"),
    "eval/yfpo_fdt-s0/mawps_singleop": ("eval", "eval/yfpo_fdt-s0-5ec16fe337/mawps_singleop"),
    "eval/yfpo_fdt-s0/discrimination": ("discrimination", "eval/yfpo_fdt-s0-5ec16fe337/discrimination"),
}


class _Fakes:
    def neurons(self, cfg):
        NeuronSet([0, 1], [1, 2], [0.3, 0.1], [0, 0], [1, 1], {"num_layers": 2, "intermediate_size": 8}).save(cfg.out)
        wd = work_dir_for(cfg.out)  # the random control reads the find run's activation statistics
        wd.mkdir(exist_ok=True)
        torch.save({"act_mean_math": torch.zeros(2, 8), "act_std_math": torch.ones(2, 8)}, wd / "grids.pt")
        return Path(cfg.out)

    def check(self, cfg):
        return {"paths": {}, "verdict_text": "fake"}

    def pairs(self, cfg):
        out = Path(cfg.out_dir)
        (out / "pairs.jsonl").write_text(json.dumps({"prompt": "q", "chosen": "a", "rejected": "b"}) + "\n")
        summary = {"questions": 1, "samples": 1, "sample_accuracy": 0.0, "pairs": 1, "pairs_by_source": {"gold": 1}}
        (out / "summary.json").write_text(json.dumps(summary))
        return out / "pairs.jsonl"

    def reference(self, cfg, neurons, out_dir):
        p = Path(out_dir) / "reference.json"
        p.write_text("{}")
        return p

    def train(self, cfg):
        out = Path(cfg.output_dir)
        (out / "final").mkdir(parents=True, exist_ok=True)
        return out

    def evals(self, model_path, jobs, **kw):
        return [{"n": 1, "primary": "flexible", "accuracy": {"flexible": {"acc": 0.0}}, "time_s": 1.0} for _ in jobs]

    def discrimination(self, model_path, **kw):
        return {"accuracy": 0.5, "n": 1}

    def runners(self):
        names = ("neurons", "check", "pairs", "reference", "train", "evals", "discrimination")
        return {n: getattr(self, n) for n in names}


def quick_stage_folders(tmp_path: Path) -> dict[str, tuple[str, str]]:
    """{stage name: (kind, folder)} of quick.yaml's plan, as the pipeline names them."""
    rc = load_run_config(QUICK, {"out_root": str(tmp_path), "report": False})
    run_pipeline(rc, runners=_Fakes().runners(), log=lambda m: None)
    idx = json.loads((tmp_path / "quick" / "run.json").read_text())
    return {s["name"]: (s["kind"], s["dir"]) for s in idx["stages"]}


def test_quick_yaml_stage_hashes_are_unchanged(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # model "default" is a name, not a folder of the working directory
    got = quick_stage_folders(tmp_path / "runs")
    changed = {
        k: (EXPECTED.get(k), got.get(k)) for k in sorted(set(EXPECTED) | set(got)) if EXPECTED.get(k) != got.get(k)
    }
    assert not changed, f"stage hashes of configs/quick.yaml changed (expected, got): {changed}"
