"""yfpo.log: -v/-q and YFPO_LOG_LEVEL set the `yfpo` logger's level; --no-progress / YFPO_NO_PROGRESS turn off our
bars and the libraries' own."""

from __future__ import annotations

import logging

import pytest

from yfpo import log
from yfpo.cli import main, output_flags


@pytest.fixture
def restore(monkeypatch):
    """Put the logger level, the progress switches and YFPO_NO_PROGRESS back after a test."""
    import datasets
    import huggingface_hub.utils as hf_utils
    from transformers.utils import logging as hf_logging

    monkeypatch.setenv("YFPO_NO_PROGRESS", "0")
    level = logging.getLogger("yfpo").level
    yield
    logging.getLogger("yfpo").setLevel(level)
    hf_logging.enable_progress_bar()
    datasets.enable_progress_bars()
    hf_utils.enable_progress_bars()


def test_levels_from_flags_and_environment(monkeypatch):
    monkeypatch.delenv("YFPO_LOG_LEVEL", raising=False)
    assert log.level_from() == logging.INFO
    assert log.level_from(verbose=1) == logging.DEBUG and log.level_from(quiet=1) == logging.WARNING
    assert log.level_from(quiet=2) == logging.ERROR
    assert log.level_from(env="warning") == logging.WARNING and log.level_from(env="15") == 15
    monkeypatch.setenv("YFPO_LOG_LEVEL", "ERROR")
    assert log.level_from() == logging.ERROR and log.level_from(verbose=1) == logging.DEBUG  # a flag wins
    with pytest.raises(ValueError, match="YFPO_LOG_LEVEL='loud'"):
        log.level_from(env="loud")


def test_output_flags_anywhere_on_the_line():
    assert output_flags(["eval", "-q", "--limit", "3", "--no-progress"]) == (["eval", "--limit", "3"], 0, 1, True)
    assert output_flags(["-vv", "train", "--verbose", "x.yaml"]) == (["train", "x.yaml"], 3, 0, False)
    # a value after a bare "--" is left alone
    assert output_flags(["run", "c.yaml", "--", "-q"]) == (["run", "c.yaml", "--", "-q"], 0, 0, False)


def test_quiet_silences_status_lines_not_results(restore, capsys):
    """`yfpo models prepare`: its status line is an info message (stdout), gone under -q; `models list` (a result) is
    printed either way; a warning goes to stderr."""
    assert main(["models", "prepare", "smollm2-135m-instruct"]) == 0
    assert "ready at" in capsys.readouterr().out
    assert main(["-q", "models", "prepare", "smollm2-135m-instruct"]) == 0
    assert "ready at" not in capsys.readouterr().out
    log.get_logger("yfpo.test").warning("careful")
    assert capsys.readouterr().err == "careful\n"
    assert main(["models", "list", "-q"]) == 0
    assert "smollm2-135m-instruct" in capsys.readouterr().out


def test_no_progress_silences_every_library(restore):
    import datasets
    import huggingface_hub.utils as hf_utils
    from transformers.utils import logging as hf_logging

    assert hf_logging.is_progress_bar_enabled() and datasets.is_progress_bar_enabled()
    log.configure(no_progress=True)
    assert log.progress_disabled()
    assert not hf_logging.is_progress_bar_enabled()  # transformers and TRL (which draws through transformers)
    assert not datasets.is_progress_bar_enabled()
    assert hf_utils.are_progress_bars_disabled()
    from yfpo.utils import progress

    assert progress(range(3)).disable  # ours
