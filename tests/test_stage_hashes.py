"""Guard: `configs/quick.yaml`'s stage hashes are pinned. Every stage folder's name carries the hash of its config
and inputs; a refactor that changes one (a new config field in the hash, a renamed key, another model
fingerprint) would make every existing run redo that stage and everything downstream, and would stop
`quick.yaml` from reproducing its committed numbers. The expected values below were computed by the code of
main at 3d58b93 (before the pipeline became a graph). A deliberate change of a hash needs a stated one-time
migration, and then these values are updated in the same commit.

The stage graph is built by the real code path (load_run_config -> make_plan -> build_graph, as `yfpo run` does);
hashes do not depend on what the stages produce, so nothing runs. (Until the pipeline became a graph, this test ran
the pipeline with fake stage functions and read run.json; the expected values are the ones that run produced.)"""

from __future__ import annotations

from pathlib import Path

from yfpo.pipeline import load_run_config
from yfpo.pipeline.graph import build_graph
from yfpo.pipeline.plan import make_plan

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


def quick_stage_folders(tmp_path: Path) -> dict[str, tuple[str, str]]:
    """{stage name: (kind, folder)} of quick.yaml's stage graph (nothing runs)."""
    rc = load_run_config(QUICK, {"out_root": str(tmp_path), "report": False})
    plan = make_plan(rc)
    rc.methods = plan.methods
    return {n.name: (n.kind, n.rel.format(hash=n.hash)) for n in build_graph(rc, plan)}


def test_quick_yaml_stage_hashes_are_unchanged(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # model "default" is a name, not a folder of the working directory
    got = quick_stage_folders(tmp_path / "runs")
    changed = {
        k: (EXPECTED.get(k), got.get(k)) for k in sorted(set(EXPECTED) | set(got)) if EXPECTED.get(k) != got.get(k)
    }
    assert not changed, f"stage hashes of configs/quick.yaml changed (expected, got): {changed}"
