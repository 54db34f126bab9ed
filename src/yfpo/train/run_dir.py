"""The run directory of `yfpo train` and `yfpo grpo`, and its lifecycle (`run_training`):

OUT/config.hash.json   the config as identities (yfpo.resume: a rerun with another config is refused)
    config.yaml        the config (keys that differ from the defaults; `yfpo train` reads it back)
    versions.json      library versions and machine facts
    metrics.jsonl      every log row, append-only; a resume appends {"event": "resume", "step": N}
    tensorboard/ wandb/  report_to's trackers (when asked for)
    checkpoints/       TRL's checkpoints while training (deleted at the end unless keep_checkpoints)
    final/             the trained model (a LoRA run's adapter; merged with merge_final)
    train_done.json    steps, time and the trainer's summary, written last
"""

from __future__ import annotations

import copy
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import torch.distributed as dist
from transformers import TrainerCallback
from transformers.integrations import TensorBoardCallback

from yfpo import resume as strict
from yfpo.config import save_config
from yfpo.utils import append_jsonl, atomic_write_json, read_jsonl_resume, seed_everything, versions


class MetricsJsonl(TrainerCallback):
    """Append every log row to metrics.jsonl (flushed), so a killed run keeps its curves."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        append_jsonl(self.path, [{"step": state.global_step, "epoch": state.epoch, "time": time.time(), **logs}])


def last_checkpoint(ckpt_dir: Path) -> Path | None:
    if not ckpt_dir.exists():
        return None
    cks = [p for p in ckpt_dir.glob("checkpoint-*") if p.is_dir() and (p / "trainer_state.json").exists()]
    return max(cks, key=lambda p: int(p.name.split("-")[-1])) if cks else None


def trackers_into(trainer, out: Path) -> None:
    """Experiment trackers (report_to) write below the run directory unless told otherwise: TensorBoard's event
    files to OUT/tensorboard (not ./runs or the checkpoints folder), wandb's run folder to OUT/wandb."""
    for cb in trainer.callback_handler.callbacks:
        if isinstance(cb, TensorBoardCallback) and cb.logging_dir is None:  # TENSORBOARD_LOGGING_DIR wins
            cb.logging_dir = str(out / "tensorboard")
    if "wandb" in (trainer.args.report_to or []):
        if os.environ.get("WANDB_DIR") in (None, _WANDB_DIR_SET[0]):  # the user's own setting wins
            os.environ["WANDB_DIR"] = _WANDB_DIR_SET[0] = str(out)
        os.environ.setdefault("WANDB_PROJECT", "yfpo")


_WANDB_DIR_SET: list[str | None] = [None]  # the WANDB_DIR this process set last (a later run moves it)


DONE = "train_done.json"  # not done.json: that name is the pipeline's stage record in the same folder
# keys that change no weight: where and how often the run logs and saves, and in which form it keeps them
_NOT_RESULT = frozenset({"logging_steps", "save_steps", "save_total_limit", "merge_final", "keep_checkpoints"})


def prune_checkpoints(out: Path, cfg) -> None:
    """A finished run needs no checkpoint (each is the weights plus the optimizer state: 3x the model for full
    fine-tuning with Adam); they are deleted unless cfg.keep_checkpoints. Called after DONE is written, so a
    process killed while deleting leaves a finished run, whose next call deletes the rest."""
    if not getattr(cfg, "keep_checkpoints", False) and (out / "checkpoints").exists():
        shutil.rmtree(out / "checkpoints", ignore_errors=True)


def run_training(
    cfg,
    stage: str,
    record: dict,
    build: Callable[[Path], tuple[Any, Path]],
    *,
    resume: bool = True,
    overwrite: bool = False,
    ignored=None,
    summary: Callable[[Any], dict] | None = None,
) -> Path:
    """The run-directory lifecycle `yfpo train` and `yfpo grpo` share: strict resume (a folder made by another
    config is refused, unless overwrite empties it), build the trainer (a bad input fails before anything is
    written), claim the folder, config + versions, append-only metrics with a resume marker, train from the last
    checkpoint, a checkpoint when stopped early, final/ (a LoRA run's adapter, merged when cfg.merge_final), DONE
    with the summary, and checkpoints/ deleted (unless cfg.keep_checkpoints). `record` is the config as identities (model/pairs/neurons by content); `build(out)` returns
    (trainer, out)."""
    out = Path(cfg.output_dir)
    ignored = strict.IGNORED | _NOT_RESULT if ignored is None else ignored
    if not overwrite:
        strict.check(out, stage, record, ignored=ignored)
        if (out / DONE).exists():
            prune_checkpoints(out, cfg)
            return out
    seed_everything(cfg.seed)
    trainer, out = build(out)
    acc = trainer.accelerator
    main = acc.is_main_process  # under accelerate/DDP only one process writes the run directory's own files
    if main:
        strict.claim(out, stage, record, overwrite=overwrite, ignored=ignored)
    acc.wait_for_everyone()
    last = last_checkpoint(out / "checkpoints") if resume else None
    if main:
        save_config(cfg, out / "config.yaml")
        atomic_write_json(out / "versions.json", versions())
        # append-only: a torn last line is cut; a marker says the steps after the checkpoint are replayed
        mpath = out / "metrics.jsonl"
        if read_jsonl_resume(mpath):
            append_jsonl(
                mpath, [{"event": "resume", "step": int(last.name.split("-")[-1]) if last else 0, "time": time.time()}]
            )
    acc.wait_for_everyone()
    t0 = time.time()
    trainer.train(resume_from_checkpoint=str(last) if last else None)
    if (
        trainer.state.global_step < trainer.state.max_steps
    ):  # stopped early (a callback stopped it: a checkpoint to resume from)
        if not (out / "checkpoints" / f"checkpoint-{trainer.state.global_step}").exists():
            trainer._save_checkpoint(trainer.model, None)
        return out
    final = out / "final"
    tok = trainer.processing_class
    if getattr(trainer, "capture", None) is not None:
        trainer.capture.remove()
    merged_lora = bool(cfg.lora and cfg.merge_final)
    if merged_lora:
        if main:
            merged = copy.deepcopy(acc.unwrap_model(trainer.model)).merge_and_unload()
            merged.save_pretrained(final)
    else:
        trainer.save_model(str(final))  # collective where the model is sharded; writes on the main process
    if main:
        tok.save_pretrained(final)
        done = {
            "steps": trainer.state.global_step,
            "train_time_s": round(time.time() - t0, 1),
            "final": str(final),
            "merged": merged_lora,
            **(summary(trainer) if summary else {}),
        }
        atomic_write_json(out / DONE, done)
        prune_checkpoints(out, cfg)
    acc.wait_for_everyone()
    return out


def end_distributed() -> None:
    """Tear down the process group a launched training (`accelerate launch ... yfpo train`) opened, before the process
    exits: a gloo group left to interpreter shutdown can abort a rank after the run finished ("terminate called
    without an active exception", exit -6), failing a finished training. For the CLI processes, which own the group;
    a caller of train() that made its own group keeps it."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
