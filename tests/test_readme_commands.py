"""Every command in README.md runs as written: the cheap ones (`--help`, `--check-only`, `--keys`) are run, in a
folder holding the files they name (a model folder, a pairs file); for every other `yfpo` command the subcommand
exists and each of its options is one the subcommand (or, for `yfpo train`, a training key) takes; the Python
block's imports resolve; every file the README links exists."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from yfpo.cli import main

ROOT = Path(__file__).parents[1]
README = (ROOT / "README.md").read_text()
CHEAP = ("--help", "--check-only", "--keys")


def _commands() -> list[str]:
    """Shell commands of the ```bash blocks (comments dropped, `a && b` split) and `yfpo ...` code spans."""
    out = []
    for block in re.findall(r"```bash\n(.*?)```", README, re.S):
        for line in block.splitlines():
            line = re.split(r"\s#\s", " " + line, maxsplit=1)[0].strip()
            out += [c.strip() for c in line.split("&&") if c.strip()]
    prose = re.sub(r"```.*?```", "", README, flags=re.S)
    out += [c for c in re.findall(r"`((?:\.venv/bin/)?yfpo [^`]+)`", prose) if not re.search(r"[A-Z]{3,}|\.\.\.", c)]
    return list(dict.fromkeys(out))


def _yfpo_argv(cmd: str) -> list[str] | None:
    words = shlex.split(cmd)
    if words and words[0] in ("yfpo", ".venv/bin/yfpo"):
        return words[1:]
    return None


def test_readme_has_the_commands_it_promises():
    cmds = _commands()
    assert any(c.startswith("bash scripts/setup.sh") for c in cmds)
    assert ".venv/bin/yfpo run configs/quick.yaml" in cmds and ".venv/bin/python -m pytest" in cmds
    assert sum(c.endswith("--check-only") for c in cmds) >= 2


@pytest.fixture
def user_files(tmp_path, monkeypatch):
    """A folder like a user's: the repository's configs and scripts, a model folder and a pairs file."""
    from yfpo.models.tiny import save_tiny

    for name in ("configs", "scripts"):
        (tmp_path / name).symlink_to(ROOT / name)
    save_tiny(tmp_path / "my-model")
    pair = {"prompt": "What is 2+3?", "chosen": "2+3 = 5. The answer is 5.", "rejected": "The answer is 6."}
    (tmp_path / "my_pairs.jsonl").write_text("".join(json.dumps(pair) + "\n" for _ in range(3)))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_cheap_readme_commands_run_as_written(user_files, capsys):
    ran = 0
    for cmd in _commands():
        if not cmd.endswith(CHEAP):
            continue
        argv = _yfpo_argv(cmd)
        if argv is None:  # a script: run by the shell, as a user would
            r = subprocess.run(cmd, shell=True, capture_output=True, text=True, cwd=user_files)
            assert r.returncode == 0, (cmd, r.stderr[-2000:])
        else:
            try:
                rc = main(argv)
            except SystemExit as e:  # --help exits through argparse
                rc = e.code
            assert rc == 0, (cmd, capsys.readouterr().err[-2000:])
        ran += 1
    assert ran >= 4


def _help(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as e:
        main(argv + ["--help"])
    assert e.value.code == 0, argv
    return capsys.readouterr().out


def test_every_other_readme_command_uses_real_subcommands_and_options(capsys):
    checked = 0
    for cmd in _commands():
        argv = _yfpo_argv(cmd)
        if argv is None or cmd.endswith(CHEAP):
            continue
        sub = [w for w in argv[:2] if not w.startswith("-") and not w.endswith((".yaml", ".jsonl"))]
        sub = sub[:2] if len(sub) == 2 and sub[0] in ("neurons", "models") else sub[:1]
        text = _help(sub, capsys)
        if sub == ["train"]:
            main(["train", "--keys"])
            text += capsys.readouterr().out
        if sub != ["run"]:  # run's options are config overrides, checked by the --check-only commands
            for opt in re.findall(r"(?<!\S)--([a-z][\w-]*)", cmd):
                assert re.search(rf"--{opt}\b|^\s*{opt.replace('-', '_')}\s", text, re.M), (cmd, opt)
        checked += 1
    assert checked >= 3


def test_readme_python_imports_resolve():
    blocks = re.findall(r"```python\n(.*?)```", README, re.S)
    assert blocks
    for block in blocks:
        imports = "\n".join(ln for ln in block.splitlines() if re.match(r"(from \S+ )?import ", ln))
        exec(compile(imports, "README.md", "exec"), {})


def test_readme_links_exist():
    links = re.findall(r"\]\(([^)#]+)\)", README) + re.findall(r"\b(docs/[\w./-]+\w)", README)
    missing = [x for x in links if not x.startswith("http") and not (ROOT / x).exists()]
    assert not missing
