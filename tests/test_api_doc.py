"""docs/api.md's complete run executes as written on the tiny test model, and `import yfpo` exports the stage
functions and configs without importing them up front."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import yfpo

DOC = Path(__file__).resolve().parents[1] / "docs" / "api.md"


def test_every_export_resolves_and_import_is_lazy():
    code = "import sys, yfpo; print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('trl', 'torch'))))"
    out = subprocess.run([sys.executable, "-c", "import json; " + code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []  # neither torch nor TRL on `import yfpo`
    for name in yfpo.__all__:
        assert getattr(yfpo, name) is not None, name
    assert yfpo.TrainConfig.__mro__[1].__name__ == "DPOConfig"


def test_api_doc_example_runs_on_the_tiny_model(tmp_path, monkeypatch, capsys):
    from yfpo.models.tiny import save_tiny

    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    example = blocks[0]
    model_dir = save_tiny(tmp_path / "tiny", family="llama", seed=0)
    line = 'model = "default"  # the embedded SmolLM2-135M-Instruct; or a local Hugging Face folder, or a hub id'
    assert line in example
    code = example.replace(line, f"model = {str(model_dir)!r}")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, str(DOC), "exec"), {"__name__": "api_doc"})
    out = tmp_path / "runs" / "api"
    assert (out / "neurons.json").exists() and (out / "pairs" / "pairs.jsonl").exists()
    assert json.loads((out / "yfpo" / "train_done.json").read_text())["steps"] == 2
    assert json.loads((out / "yfpo" / "calibration.json").read_text())["std"] > 0  # the neuron reward was on
    printed = capsys.readouterr().out
    assert re.search(r"^base \d", printed, flags=re.M) and re.search(r"^yfpo \d", printed, flags=re.M), printed
