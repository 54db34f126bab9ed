"""Report: built from a synthetic run directory in the documented schemas; statistics checked by hand."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from yfpo.neurons.neuronset import NeuronSet
from yfpo.report.build import build_report
from yfpo.report.compare import comparison, mcnemar, seed_ci, wilson
from yfpo.report.read import read_run


def test_wilson_and_seed_ci_and_mcnemar_values():
    lo, hi = wilson(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-3) and hi == pytest.approx(0.7634, abs=1e-3)
    m, lo, hi = seed_ci([0.2, 0.4])
    assert m == pytest.approx(0.3) and lo == pytest.approx(0.3 - 12.7062 * (0.02**0.5) / 2**0.5, rel=1e-4)
    assert seed_ci([0.5]) == (0.5, 0.5, 0.5)
    r = mcnemar([True] * 10 + [False] * 5, [False] * 10 + [False] * 5)
    assert r["a_only"] == 10 and r["b_only"] == 0 and r["p"] == pytest.approx(2 * 0.5**10)
    assert mcnemar([True, False], [True, False])["p"] == 1.0


def _write_eval(folder: Path, correct: list[bool], bench: str):
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "items.jsonl", "w") as f:
        for i, c in enumerate(correct):
            f.write(
                json.dumps(
                    {
                        "id": f"{bench}-{i}",
                        "question": "q",
                        "gold": "1",
                        "prompt": "p",
                        "output": "o",
                        "n_tokens": 3,
                        "truncated": False,
                        "extracted": {"flexible": "1"},
                        "correct": {"flexible": c, "strict": False},
                    }
                )
                + "\n"
            )
    k, n = sum(correct), len(correct)
    (folder / "summary.json").write_text(
        json.dumps(
            {
                "bench": bench,
                "model": "m",
                "n": n,
                "primary": "flexible",
                "accuracy": {"flexible": {"acc": k / n, "lo": 0, "hi": 1, "n_correct": k}},
                "protocol": {
                    "template": "chatml",
                    "shots": 0,
                    "decoding": "greedy",
                    "max_new_tokens": 64,
                    "extractors": ["flexible"],
                    "stop": None,
                },
            }
        )
    )
    (folder / "done.json").write_text("{}")


def make_run(root: Path) -> Path:
    run = root / "runs" / "synth"
    stages = []
    nd = run / "stages" / "neurons-aaa"
    nd.mkdir(parents=True)
    NeuronSet(
        [0, 0, 1],
        [3, 7, 2],
        [0.5, -0.2, 0.1],
        [0.0, 0.1, 0.2],
        [1.0, 1.0, 1.0],
        {"num_layers": 2, "intermediate_size": 16, "family": "llama", "model": "tiny", "method": "attnlrp"},
    ).save(nd / "neurons.json")
    (nd / "done.json").write_text("{}")
    stages.append({"name": "neurons", "kind": "neurons", "dir": "stages/neurons-aaa", "hash": "aaa"})
    cd = run / "stages" / "check-ccc"
    cd.mkdir(parents=True)
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(2, 2))
    plt.plot([0, 1], [1, 0])
    fig.savefig(cd / "check.png")
    plt.close(fig)
    (cd / "check.json").write_text(json.dumps({"verdict_text": "Ablation check (zero) of 3 neurons"}))
    (cd / "done.json").write_text(json.dumps({"outputs": {"paths": {"png": "stages/check-ccc/check.png"}}}))
    stages.append({"name": "check", "kind": "check", "dir": "stages/check-ccc", "hash": "ccc"})
    pd = run / "stages" / "pairs-bbb"
    pd.mkdir(parents=True)
    (pd / "summary.json").write_text(
        json.dumps(
            {
                "questions": 8,
                "samples": 32,
                "sample_accuracy": 0.25,
                "pairs": 10,
                "pairs_by_source": {"self": 6, "gold": 4},
                "dropped": {"truncated": 2},
                "bench": "gsm8k_train",
            }
        )
    )
    (pd / "done.json").write_text("{}")
    stages.append({"name": "pairs", "kind": "pairs", "dir": "stages/pairs-bbb", "hash": "bbb"})
    n = 40
    # yfpo: right on 15 items where dpo is wrong (significant); yfpo_fdt vs dpo_fdt: 2 vs 1 discordant (not)
    dpo = [i < 10 for i in range(n)]
    patterns = {
        "base": [i < 4 for i in range(n)],
        "dpo": dpo,
        "yfpo": [i < 25 for i in range(n)],
        "dpo_fdt": [i < 11 for i in range(n)],
        "yfpo_fdt": [i < 12 or i == 39 for i in range(n)],
    }
    for method, corr in patterns.items():
        for seed in [None] if method == "base" else [0, 1]:
            tag = "base" if seed is None else f"{method}-s{seed}"
            d = f"eval/{tag}-ccc/gsm8k"
            _write_eval(run / d, corr, "gsm8k")
            stages.append(
                {
                    "name": f"eval/{tag}/gsm8k",
                    "kind": "eval",
                    "dir": d,
                    "hash": "c",
                    "method": method,
                    "seed": seed,
                    "bench": "gsm8k",
                }
            )
            dd = run / f"eval/{tag}-ccc/discrimination"
            dd.mkdir(parents=True)
            (dd / "discrimination.json").write_text(json.dumps({"n": 20, "accuracy": 0.6 if "yfpo" in method else 0.5}))
            (dd / "done.json").write_text("{}")
            stages.append(
                {
                    "name": f"eval/{tag}/discrimination",
                    "kind": "discrimination",
                    "dir": f"eval/{tag}-ccc/discrimination",
                    "hash": "d",
                    "method": method,
                    "seed": seed,
                }
            )
            if seed is not None:
                td = run / f"train/{tag}-ttt"
                td.mkdir(parents=True)
                with open(td / "metrics.jsonl", "w") as f:
                    for step in range(1, 6):
                        f.write(
                            json.dumps(
                                {
                                    "step": step,
                                    "loss": 0.69 - 0.05 * step,
                                    "rewards/margins": 0.1 * step,
                                    "rewards/accuracies": 0.5,
                                    "neuron/margin": 0.02 * step,
                                    "neuron/accuracy": 0.6,
                                }
                            )
                            + "\n"
                        )
                    f.write(
                        json.dumps({"step": 5, "train_runtime": 3.0, "train_loss": 0.5}) + "\n"
                    )  # trainer's end row
                (td / "done.json").write_text("{}")
                stages.append(
                    {
                        "name": f"train/{tag}",
                        "kind": "train",
                        "dir": f"train/{tag}-ttt",
                        "hash": "t",
                        "method": method,
                        "seed": seed,
                    }
                )
    # an unfinished stage: folder without done.json
    (run / "eval/extra-s0-eee/gsm8k").mkdir(parents=True)
    stages.append(
        {
            "name": "eval/extra-s0/gsm8k",
            "kind": "eval",
            "dir": "eval/extra-s0-eee/gsm8k",
            "hash": "e",
            "method": "extra",
            "seed": 0,
            "bench": "gsm8k",
        }
    )
    (run / "run.json").write_text(
        json.dumps(
            {
                "name": "synth",
                "stages": stages,
                "config": {
                    "name": "synth",
                    "model": "tiny",
                    "seeds": [0, 1],
                    "methods": {m: {} for m in patterns if m != "base"},
                    "eval": {"benches": ["gsm8k"]},
                },
            }
        )
    )
    return run


def test_comparison_numbers(tmp_path):
    rd = read_run(make_run(tmp_path))
    comp = comparison(rd)
    assert comp["methods"] == ["base", "dpo", "yfpo", "dpo_fdt", "yfpo_fdt"]
    c = comp["table"]["yfpo"]["gsm8k"]
    assert c["acc"] == pytest.approx(25 / 40) and c["n_items"] == 80 and c["seeds"] == 2
    assert (c["lo"], c["hi"]) == pytest.approx(wilson(25, 40))  # items count once, not once per seed
    assert c["vs_ref"]["n"] == 80 and c["vs_ref"]["a_only"] == 30 and c["vs_ref"]["n_items"] == 40
    # the same 15 items in both seeds: 15 items count once (exact sign-flip p = 2 * 2^-15), not 30 rows
    assert c["vs_ref"]["p"] == pytest.approx(2 * 0.5**15) and c["vs_ref"]["p_rows"] == pytest.approx(2 * 0.5**30)
    assert comp["table"]["base"]["gsm8k"]["vs_ref"]["n"] == 80  # base paired with each DPO seed
    assert "vs_ref" not in comp["table"]["dpo"]["gsm8k"]
    assert comp["discrimination"]["yfpo"]["acc"] == pytest.approx(0.6)
    assert "extra" not in comp["methods"]  # unfinished stage ignored


def test_report_files_and_verdicts(tmp_path):
    run = make_run(tmp_path)
    page = build_report(run)
    md = (page.parent / "report.md").read_text()
    html = page.read_text()
    assert "YFPO vs DPO on gsm8k: 62.5% vs 25.0%" in md and "the neuron reward helped (significant at 0.05)" in md
    assert "YFPO+FDT vs DPO+FDT on gsm8k" in md and "not significant at 0.05" in md
    m = re.search(
        r"YFPO\+FDT vs DPO\+FDT on gsm8k: .*exact sign-flip over 40 items \(mean of 2 seeds\) p = "
        r"([0-9.e-]+)",
        md,
    )
    assert float(m.group(1)) == pytest.approx(mcnemar([True] * 2, [False] * 2)["p"]) == pytest.approx(0.5)
    assert "| DPO | 2 |" in md and "| dpo-s0 | 5 | 0.440 | 0.500 |" in md
    assert "Unfinished stages (missing from the tables below): eval/extra-s0/gsm8k." in md
    for png in ("accuracy.png", "training_curves.png", "neuron_layers.png", "causal_check.png"):
        assert (page.parent / png).stat().st_size > 1000
    assert html.count("data:image/png;base64,") == 4
    # the markdown's images are files beside it (the report folder can be copied anywhere, e.g. into docs/)
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert len(links) == 4 and all(not Path(x).is_absolute() and (page.parent / x).exists() for x in links)
    assert "Ablation check (zero) of 3 neurons" in md
    assert not re.search(r"src=\"(?!data:)", html)  # self-contained
    assert "This gave 10 pairs" in md and "25.0% of the samples were correct" in md
    # readable: the pairs and neuron sections are tables and sentences, not Python reprs or a text dump
    assert "| self | 6 | 60.0% |" in md and "Dropped samples: 2 truncated." in md
    assert "{'" not in md and "{'" not in html and "['" not in md  # no dict or list reprs
    assert "| extractors | flexible |" in md and "| stop | none |" in md  # the protocol as a small table
    assert "| layer | 0 | 1 |" in md and "| neurons | 2 | 1 |" in md
    assert "| 1 | 0 | 3 | 5.000e-01 |" in md  # top neuron by |score|: layer 0, index 3


def test_report_cli_and_missing_run(tmp_path, capsys):
    from yfpo.cli import main

    run = make_run(tmp_path)
    assert main(["report", str(run), "--out", str(tmp_path / "rep")]) == 0
    assert (tmp_path / "rep" / "report.html").exists()
    assert main(["report", str(tmp_path / "nope")]) == 1
    assert "run.json does not exist" in capsys.readouterr().err


def test_neuron_comparisons_from_config():
    from yfpo.report.verdicts import neuron_comparisons

    methods = {
        "dpo": {"gamma": 0.0},
        "yfpo": {"gamma": 1.0},
        "dpo_fdt": {"gamma": 0.0, "fdt": True},
        "yfpo_fdt": {"gamma": 1.0, "fdt": True},
        "yfpo_g10": {"gamma": 10.0},
        "yfpo_fdt_g5": {"gamma": 5.0, "fdt": True},
        "ipo_g1": {"gamma": 1.0, "loss_type": "ipo"},
    }
    assert neuron_comparisons(methods) == [
        ("yfpo", "dpo"),
        ("yfpo_fdt", "dpo_fdt"),
        ("yfpo_g10", "dpo"),
        ("yfpo_fdt_g5", "dpo_fdt"),
    ]  # ipo_g1 has no gamma-0 twin
    online = {  # the online-RL methods (configs/online_rl.yaml): every neuron-aware variant against its plain twin
        "grpo": {"trainer": "grpo"},
        "oreal_probe": {"trainer": "grpo", "loss_type": "oreal", "oreal_token_weights": "probe"},  # not a twin
        "pacs": {"trainer": "grpo", "loss_type": "pacs"},
        "pacs_nloss": {"trainer": "grpo", "loss_type": "pacs", "neuron_loss_weight": 0.5},
        "oreal": {"trainer": "grpo", "loss_type": "oreal"},
        "oreal_nweights": {"trainer": "grpo", "loss_type": "oreal", "oreal_token_weights": "neuron"},
        "merci": {"trainer": "grpo", "intrinsic": "merci"},
        "merci_nfeatures": {"trainer": "grpo", "intrinsic": "merci", "merci_features": "neurons"},
    }
    got = [c for c in neuron_comparisons(online) if c[0] in online]
    assert got == [("pacs_nloss", "pacs"), ("oreal_nweights", "oreal"), ("merci_nfeatures", "merci")]


def test_report_verdict_for_an_extra_gamma(tmp_path):
    run = make_run(tmp_path)
    idx = json.loads((run / "run.json").read_text())
    idx["config"]["methods"] = {
        "dpo": {"gamma": 0},
        "yfpo": {"gamma": 1},
        "dpo_fdt": {"gamma": 0, "fdt": True},
        "yfpo_fdt": {"gamma": 1, "fdt": True},
        "yfpo_g10": {"gamma": 10},
    }
    for seed in (0, 1):  # yfpo_g10 evaluated like yfpo
        d = f"eval/yfpo_g10-s{seed}-ccc/gsm8k"
        _write_eval(run / d, [i < 25 for i in range(40)], "gsm8k")
        idx["stages"].append(
            {
                "name": f"eval/yfpo_g10-s{seed}/gsm8k",
                "kind": "eval",
                "dir": d,
                "hash": "c",
                "method": "yfpo_g10",
                "seed": seed,
                "bench": "gsm8k",
            }
        )
    (run / "run.json").write_text(json.dumps(idx))
    md = (build_report(run).parent / "report.md").read_text()
    assert "yfpo_g10 vs DPO on gsm8k: 62.5% vs 25.0%" in md and "| yfpo_g10 | 2 |" in md


def test_wilson_interval_counts_each_item_once(tmp_path):
    """With 2 seeds on the same 40 items, the item CI is the 40-item interval (pooling 80 rows would be
    ~sqrt(2) too narrow)."""
    comp = comparison(read_run(make_run(tmp_path)))
    c = comp["table"]["dpo"]["gsm8k"]
    lo, hi = wilson(10, 40)
    assert (c["lo"], c["hi"]) == pytest.approx((lo, hi)) and c["n_per_seed"] == 40
    lo80, hi80 = wilson(20, 80)
    assert hi - lo > 1.3 * (hi80 - lo80)


def _add_method(run: Path, method: str, correct: list[bool], cfg: dict) -> None:
    idx = json.loads((run / "run.json").read_text())
    idx["config"]["methods"][method] = cfg
    for seed in (0, 1):
        d = f"eval/{method}-s{seed}-ccc/gsm8k"
        _write_eval(run / d, correct, "gsm8k")
        idx["stages"].append(
            {
                "name": f"eval/{method}-s{seed}/gsm8k",
                "kind": "eval",
                "dir": d,
                "hash": "c",
                "method": method,
                "seed": seed,
                "bench": "gsm8k",
            }
        )
    (run / "run.json").write_text(json.dumps(idx))


def _with_gammas(run: Path) -> None:
    idx = json.loads((run / "run.json").read_text())
    idx["config"]["methods"] = {
        "dpo": {"gamma": 0},
        "yfpo": {"gamma": 1},
        "dpo_fdt": {"gamma": 0, "fdt": True},
        "yfpo_fdt": {"gamma": 1, "fdt": True},
    }
    (run / "run.json").write_text(json.dumps(idx))


def test_random_neuron_control_verdict(tmp_path):
    from yfpo.report.verdicts import random_controls

    methods = {
        "dpo": {"gamma": 0},
        "yfpo": {"gamma": 1},
        "yfpo_random": {"gamma": 1, "neurons": "random"},
        "yfpo_fdt": {"gamma": 1, "fdt": True},
        "yfpo_flip": {"gamma": 1, "neurons": "flipped"},
    }
    assert random_controls(methods) == [("yfpo", "yfpo_random")]
    # random neurons as good as math neurons (same 25 right): helped vs DPO, but not because of the math neurons
    run = make_run(tmp_path / "a")
    _with_gammas(run)
    _add_method(run, "yfpo_random", [i < 25 for i in range(40)], {"gamma": 1, "neurons": "random"})
    md = (build_report(run).parent / "report.md").read_text()
    assert "YFPO vs YFPO (random neurons) on gsm8k: 62.5% vs 62.5%" in md
    assert "YFPO beat DPO but not the same reward on random neurons" in md
    assert "no evidence that it helped because the neurons are math neurons" in md
    # random neurons no better than DPO: the gain is the math neurons'
    run = make_run(tmp_path / "b")
    _with_gammas(run)
    _add_method(run, "yfpo_random", [i < 10 for i in range(40)], {"gamma": 1, "neurons": "random"})
    md = (build_report(run).parent / "report.md").read_text()
    assert "the gain is attributable to the math neurons" in md
    assert "| YFPO (random neurons) | 2 |" in md


def test_flipped_sign_control_verdict(tmp_path):
    """A run with the flipped-sign twin (`neurons: flipped`) gets a sentence comparing YFPO with it, and a label."""
    from yfpo.report.verdicts import controls

    methods = {"dpo": {"gamma": 0}, "yfpo": {"gamma": 1}, "yfpo_flip": {"gamma": 1, "neurons": "flipped"}}
    assert controls(methods, "flipped") == [("yfpo", "yfpo_flip")] and controls(methods, "random") == []
    run = make_run(tmp_path / "a")
    _with_gammas(run)
    _add_method(run, "yfpo_flip", [i < 10 for i in range(40)], {"gamma": 1, "neurons": "flipped"})
    md = (build_report(run).parent / "report.md").read_text()
    assert "YFPO vs YFPO (flipped signs) on gsm8k: 62.5% vs 25.0%" in md
    assert "pushing the math neurons up rather than down helped (significant at 0.05)" in md
    assert "| YFPO (flipped signs) | 2 |" in md


def test_paired_test_gives_a_bootstrap_ci_of_the_item_difference():
    from yfpo.report.compare import paired_test
    from yfpo.report.read import RunData

    def ev(correct):
        return {
            "summary": {"primary": "flexible", "n": len(correct), "accuracy": {"flexible": {"acc": 0}}},
            "items": [{"id": f"i{i}", "correct": {"flexible": c}} for i, c in enumerate(correct)],
        }

    a = [True] * 6 + [False] * 14
    b = [False] * 20
    rd = RunData(dir=Path("."), index={}, config={})
    rd.evals = {("yfpo", 0, "x"): ev(a), ("dpo", 0, "x"): ev(b)}
    t = paired_test(rd, "yfpo", "dpo", "x")
    assert t["diff"] == pytest.approx(0.3) and 0.05 < t["diff_lo"] < 0.3 < t["diff_hi"] <= 0.55


def test_report_reads_a_resumed_training_curve_once(tmp_path):
    """metrics.jsonl of a resumed training (marker + replayed steps) reads as one curve in the report."""
    from yfpo.report.read import read_run

    run = tmp_path / "r"
    folder = run / "train" / "yfpo-s0-x"
    folder.mkdir(parents=True)
    rows = [{"step": 1, "loss": 0.9}, {"step": 2, "loss": 0.8}, {"step": 3, "loss": 0.7}]  # killed after step 3
    rows += [{"event": "resume", "step": 2}, {"step": 3, "loss": 0.71}, {"step": 4, "loss": 0.6}]
    rows += [{"train_runtime": 12.0, "step": 4}]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run / "run.json").write_text(
        json.dumps(
            {
                "stages": [
                    {"name": "train/yfpo-s0", "kind": "train", "dir": "train/yfpo-s0-x", "method": "yfpo", "seed": 0}
                ]
            }
        )
    )
    rd = read_run(run)
    assert [(r["step"], r["loss"]) for r in rd.metrics["yfpo-s0"]] == [(1, 0.9), (2, 0.8), (3, 0.71), (4, 0.6)]


def test_training_curves_one_colour_per_method_in_every_panel(tmp_path, monkeypatch):
    """One colour per method in every panel (a panel drawn only for the runs that log its metric keeps it), the
    seeds of a method share it, distinct methods never do (dpo and dpo_half once shared one of 10 cycling colours),
    steps are integer ticks, and the legend names every method once, outside every panel."""
    import yfpo.report.plots as plots

    figs = []
    monkeypatch.setattr(plots, "_save", lambda fig, path, **kw: figs.append(fig) or path)
    runs = {
        "grpo-s0": [{"step": s, "loss": 0.1, "rewards/accuracy/mean": 0.1} for s in (1, 2, 3)],
        "grpo-s1": [{"step": s, "loss": 0.15, "rewards/accuracy/mean": 0.2} for s in (1, 2, 3)],
        "grpo_nl-s0": [{"step": s, "loss": 0.2, "neuron/loss_term": 0.5} for s in (1, 2, 3)],
    }
    runs |= {f"m{i}-s0": [{"step": s, "loss": 0.3} for s in (1, 2, 3)] for i in range(9)}  # 11 methods in all
    plots.training_curves(runs, tmp_path / "c.png")
    (fig,) = figs
    colours: dict[str, set] = {}
    for ax in fig.axes:
        for line in ax.get_lines():
            method = plots._method_of(line.get_label())
            colours.setdefault(method, set()).add(tuple(line.get_color()))
    assert all(len(c) == 1 for c in colours.values())  # seeds, means and panels of a method: one colour
    assert len({next(iter(c)) for c in colours.values()}) == len(colours) == 11  # no two methods share one
    loss_ax = next(ax for ax in fig.axes if ax.get_title().startswith("loss"))
    assert all(float(t).is_integer() for t in loss_ax.get_xticks())
    assert not any(ax.get_legend() for ax in fig.axes) and len(fig.legends) == 1
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["grpo", "grpo_nl"] + [f"m{i}" for i in range(9)]


def test_report_opens_with_the_verdict_table(tmp_path):
    """The first section is the verdict: one row per benchmark x comparison with the difference, its CI, the exact
    p, the smallest detectable difference and one word; then plain sentences; counts as items x seeds, stated right;
    no absolute path of the machine."""
    run = make_run(tmp_path)
    page = build_report(run)
    md = (page.parent / "report.md").read_text()
    assert [ln for ln in md.splitlines() if ln.startswith("## ")][0] == "## Verdict"
    verdict = md.split("## Verdict", 1)[1].split("\n## ", 1)[0]
    assert "| benchmark | comparison | accuracy % | difference, points [95% CI] | p (exact) |" in verdict
    row = next(ln for ln in verdict.splitlines() if ln.startswith("| gsm8k | YFPO vs DPO |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2] == "62.5 vs 25.0" and cells[3].startswith("+37.5 [") and cells[6] == "**better**"
    assert float(cells[4]) == pytest.approx(2 * 0.5**15, rel=0.01)
    fdt = next(ln for ln in verdict.splitlines() if ln.startswith("| gsm8k | YFPO+FDT vs DPO+FDT |"))
    assert fdt.rstrip(" |").endswith("underpowered")  # 1 of 40 items apart, MDE far above 5 points
    assert "| gsm8k | YFPO vs base (untrained) |" in verdict and "| gsm8k | DPO vs base (untrained) |" in verdict
    assert "better on gsm8k (+37.5)" in verdict  # the summary sentence
    assert "40 items x 2 seeds (80 paired rows)" in verdict and "over 80 paired items" not in md
    assert str(run) not in md and str(tmp_path) not in md  # relative paths only


def test_verdict_word():
    from yfpo.report.verdicts import word

    t = {"p": 0.01, "acc_a": 0.3, "acc_b": 0.2}
    assert word(t, 0.1) == "better" and word(t | {"acc_a": 0.1}, 0.1) == "worse"
    ns = {"p": 0.4, "acc_a": 0.3, "acc_b": 0.28}
    assert word(ns, 0.03) == "no detectable difference"
    assert word(ns, 0.12) == "underpowered" and word(ns, None) == "underpowered"


def test_seed_interval_is_clipped_to_0_100():
    """Three seeds at 0%, 2% and 12%: the t-interval reaches below 0, the report's does not."""
    from yfpo.report.compare import _cell

    def ev(k):
        return {
            "summary": {"primary": "flexible"},
            "items": [{"id": f"i{i}", "correct": {"flexible": i < k}} for i in range(50)],
        }

    assert seed_ci([0.0, 0.02, 0.12])[1] < 0
    c = _cell({0: ev(0), 1: ev(1), 2: ev(6)})
    assert c["seed_lo"] == 0.0 and 0 < c["seed_hi"] <= 1 and c["acc"] == pytest.approx(7 / 150)


def test_truncated_outputs_counted_wrong_beside_the_extractor(tmp_path):
    """Per method x benchmark: the share of cut-off outputs and the accuracy with them counted wrong, from the
    items' flags, or from the summary's `truncation` when the eval wrote one."""
    from yfpo.report.compare import _truncation

    items = [{"id": f"i{i}", "truncated": i < 4, "correct": {"flexible": i in (0, 5)}} for i in range(10)]
    v = {"summary": {"primary": "flexible"}, "items": items}
    assert _truncation(v) == pytest.approx((0.4, 0.1))  # item 0 right by accident: cut off
    v["summary"]["truncation"] = {"n": 3, "rate": 0.3, "accuracy_if_truncated_wrong": {"flexible": 0.2}}
    assert _truncation(v) == pytest.approx((0.3, 0.2))
    assert _truncation({"summary": {}, "items": [{"id": "a", "correct": {"letter": True}}]}) is None  # MMLU
    run = make_run(tmp_path)
    md = (build_report(run).parent / "report.md").read_text()
    assert "| YFPO | 0.0% cut; 62.5 → 62.5 |" in md


def test_report_html_renders_markdown_and_folds_the_stage_list(tmp_path):
    """Backticks become <code>, never literal text; the stages table has one row per kind with the full list in a
    <details>; the config is folded too."""
    page = build_report(make_run(tmp_path))
    html = page.read_text()
    md = (page.parent / "report.md").read_text()
    text = re.sub(r"<pre>.*?</pre>", "", html, flags=re.S)
    text = re.sub(r"<[^>]+>", "", re.sub(r"<code>.*?</code>", "", text, flags=re.S))
    assert "`" not in text and "<code>flexible</code>" in html
    assert "| stage kind | stages | finished | total time (s) | longest (s) |" in md
    assert "| eval | 10 | 9 |" in md and "| train | 8 | 8 |" in md
    assert "<details><summary>all 30 stages</summary>" in md and "<details><summary>all 30 stages</summary>" in html
    assert html.count("<details>") == 2  # the stage list and the config
    assert "<table>" in html and "| --- |" not in html  # tables rendered, not shown as Markdown


def test_rebuild_report_from_collected_data(tmp_path):
    """scripts/rebuild_report.py lays a collect_run_data.py folder out as a run directory and reports it: items with
    or without their summary, a training's metrics, the stage times; stages whose outputs were not kept are named
    at the top, not shown as unfinished."""
    from conftest import load_script

    rebuild = load_script("rebuild_report")
    data = tmp_path / "data"
    data.mkdir()
    for tag, k in (("base", 4), ("dpo-s0", 10), ("yfpo-s0", 25)):
        rows = [{"id": f"g{i}", "correct": {"flexible": i < k}, "truncated": i == 39} for i in range(40)]
        (data / f"{tag}.gsm8k.items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (data / "dpo-s0.gsm8k.summary.json").write_text(json.dumps({"bench": "gsm8k", "n": 40, "primary": "flexible"}))
    (data / "yfpo-s0.metrics.jsonl").write_text(json.dumps({"step": 1, "loss": 0.7}) + "\n")
    times = [{"name": "neurons", "kind": "neurons", "time_s": 120.0}, {"name": "eval/dpo-s0/gsm8k", "time_s": 30.0}]
    (data / "stage_times.json").write_text(json.dumps(times))
    config = {"name": "kept", "model": "default", "seeds": [0], "methods": {"dpo": {"gamma": 0}, "yfpo": {"gamma": 1}}}
    cfg = tmp_path / "config.yaml"
    cfg.write_text(json.dumps(config))  # JSON is YAML
    assert rebuild.main([str(data), str(cfg), str(tmp_path / "out")]) == 0
    md = (tmp_path / "out" / "report.md").read_text()
    assert "not kept there, so missing below: neurons." in md and "Unfinished stages" not in md
    assert "| gsm8k | YFPO vs DPO | 62.5 vs 25.0 |" in md  # dpo from its summary + items, yfpo counted from items
    assert "| neurons | 1 | 1 | 120 | 120 |" in md  # finished, outputs not kept, with its time
    assert "| YFPO | 2.5% cut; 62.5 → 62.5 |" in md


def test_angle_brackets_in_text_show_in_html_and_markdown(tmp_path):
    """A protocol's "The answer is <number>." is text: neither the HTML nor GitHub's Markdown may take it for a tag."""
    from yfpo.report.render import Doc

    doc = Doc()
    doc.p("End with: The answer is <number>. Code: `a<b>`; p < 0.05.")
    doc.table(["setting", "value"], [["instruction", "The answer is <number>."]])
    md, html = doc.markdown(tmp_path), doc.html("t")
    assert "The answer is &lt;number>." in md and "`a<b>`" in md
    assert html.count("The answer is &lt;number&gt;.") == 2 and "<code>a&lt;b&gt;</code>" in html
    assert "p &lt; 0.05" in html
