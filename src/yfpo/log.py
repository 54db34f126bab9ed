"""yfpo's messages through the `logging` module, and one switch for every progress bar.

Status lines ("wrote X", "run directory: ...") go through the `yfpo` logger: info and debug to stdout (where the
prints they replace wrote), warnings and errors to stderr; results (tables, JSON, summaries) are printed as before. The level: `-v` (debug) / `-q` (warnings and errors only) on the command line, else the environment variable
YFPO_LOG_LEVEL (DEBUG, INFO, WARNING, ERROR, or a number), else INFO. Progress bars: `--no-progress` or
YFPO_NO_PROGRESS=1 turns off ours (yfpo.utils.progress) and the libraries' (transformers' and TRL's through
transformers.utils.logging and TrainingArguments(disable_tqdm), datasets', huggingface_hub's).
"""

from __future__ import annotations

import logging
import os
import sys

LOGGER_NAME = "yfpo"
ENV_LEVEL = "YFPO_LOG_LEVEL"
ENV_NO_PROGRESS = "YFPO_NO_PROGRESS"


def get_logger(name: str = LOGGER_NAME) -> logging.Logger:
    """The logger of a yfpo module (pass __name__: yfpo.eval.cli, ... are children of `yfpo`)."""
    return logging.getLogger(name if name.startswith(LOGGER_NAME) else f"{LOGGER_NAME}.{name}")


def level_from(verbose: int = 0, quiet: int = 0, env: str | None = None) -> int:
    """-v / -q first (each -v one level down from INFO, each -q one up), else the environment's level, else INFO."""
    if verbose or quiet:
        return max(logging.DEBUG, min(logging.CRITICAL, logging.INFO + 10 * (quiet - verbose)))
    raw = (env if env is not None else os.environ.get(ENV_LEVEL, "")).strip()
    if not raw:
        return logging.INFO
    if raw.lstrip("-").isdigit():
        return int(raw)
    level = logging.getLevelName(raw.upper())
    if not isinstance(level, int):
        raise ValueError(f"{ENV_LEVEL}={raw!r}: expected DEBUG, INFO, WARNING, ERROR or a number")
    return level


class _Console(logging.StreamHandler):
    """Info and debug to sys.stdout, warnings and errors to sys.stderr, whatever they are at the time (a redirected
    or captured stream too)."""

    _yfpo = True

    def __init__(self):
        super().__init__(sys.stderr)
        self._level = logging.INFO

    def emit(self, record):
        self._level = record.levelno
        super().emit(record)

    @property
    def stream(self):
        return sys.stderr if self._level >= logging.WARNING else sys.stdout

    @stream.setter
    def stream(self, value):
        pass


def configure(verbose: int = 0, quiet: int = 0, no_progress: bool = False) -> int:
    """Set the `yfpo` logger's level and its one stderr handler (idempotent); with no_progress (or the environment's
    YFPO_NO_PROGRESS=1), turn every progress bar off. Returns the level."""
    level = level_from(verbose, quiet)
    logger = logging.getLogger(LOGGER_NAME)
    logger.setLevel(level)
    if not any(getattr(h, "_yfpo", False) for h in logger.handlers):
        h = _Console()
        h.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(h)
        logger.propagate = False
    if no_progress:
        os.environ[ENV_NO_PROGRESS] = "1"  # read by our bars, the trainers' disable_tqdm, and worker processes
    if progress_disabled():
        silence_library_progress()
    return level


def progress_disabled() -> bool:
    return os.environ.get(ENV_NO_PROGRESS) == "1"


def silence_library_progress() -> None:
    """Every library's own progress bars off: transformers (and TRL, which uses its switch), datasets,
    huggingface_hub. Each is imported only if it is already loaded or installed (they are heavy)."""
    import importlib.util

    if importlib.util.find_spec("transformers") is not None:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    if importlib.util.find_spec("datasets") is not None:
        import datasets

        datasets.disable_progress_bars()
    if importlib.util.find_spec("huggingface_hub") is not None:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
