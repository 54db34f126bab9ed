"""The stage store: a run directory of stage folders. It knows no stage kind: given a node (name, kind, folder,
config, inputs, hash, the function to run) it finds the folder finished (done.json with the node's hash) or runs
the function under an exclusive lock on the folder, records `stage.json` when it starts and `done.json` last,
and keeps `run.json`, the index of every stage. Several processes (`--workers`, Ray workers on a shared folder)
may share one store: each stage runs in one of them, the others wait for it or skip it.

Run directory:
    config.yaml                 the resolved run config
    run.json                    index: every stage, its folder, hash and status
    .locks/                     one flock file per stage folder
    <stage folders>             stage.json (config, inputs, hash), the stage's files, done.json (outputs, time)

A folder without done.json is an interrupted stage, which the stage's own resume picks up (append-only files for
pairs and eval, checkpoints for training); temporary files of interrupted writes are removed first."""

from __future__ import annotations

import fcntl
import json
import time
from pathlib import Path
from typing import Callable

from yfpo.pipeline.node import Node, StageFailed
from yfpo.utils import atomic_write_json, now, remove_stale_tmp


class StageStore:
    def __init__(
        self,
        run_dir: str | Path,
        config: dict,
        log: Callable[[str], None] = print,
        hook: Callable[[str], None] | None = None,
    ):
        self.dir = Path(run_dir)
        self.config = config  # the run config (to_dict), recorded in run.json
        self.log = log
        self.hook = hook  # called with a stage's name before it starts working
        self.index: dict = {"name": config.get("name"), "run_dir": str(self.dir), "stages": []}

    # -- the index
    def write_index(self) -> None:
        """run.json; stages another process on this run dir (same config) recorded are kept; a run.json of another
        config (an earlier run) contributes nothing."""
        self.index.update(config=self.config, updated=now())
        path = self.dir / "run.json"
        try:
            doc = json.loads(path.read_text()) if path.exists() else {}
        except ValueError:
            doc = {}
        same = json.dumps(doc.get("config"), sort_keys=True, default=str) == json.dumps(
            json.loads(json.dumps(self.config, default=str)), sort_keys=True, default=str
        )
        theirs = doc.get("stages", []) if same else []
        mine = {s["name"] for s in self.index["stages"]}
        self.index["stages"] += [s for s in theirs if s.get("name") not in mine and (self.dir / s["dir"]).exists()]
        atomic_write_json(path, self.index)

    def _entry(self, node: Node) -> dict:
        folder = node.folder(self.dir)
        entry = {"name": node.name, "kind": node.kind, "dir": str(folder.relative_to(self.dir)), "hash": node.hash}
        entry.update(node.meta)
        self.index["stages"] = [s for s in self.index["stages"] if s["name"] != node.name] + [entry]
        return entry

    def record(self, node: Node, rec: dict) -> None:
        """Index a stage another process finished (its done record `rec`)."""
        entry = self._entry(node)
        entry.update(status="done", time_s=rec.get("time_s"))

    # -- locks
    def lock(self, node: Node, wait: bool):
        """An exclusive lock on a stage folder (flock on a sibling file, so it dies with its process). Returns the
        open lock file, or None when `wait` is False and another process holds it."""
        rel = node.folder(self.dir).relative_to(self.dir).as_posix().replace("/", "__")
        path = self.dir / ".locks" / f"{rel}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        f = open(path, "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            f.close()
            return None
        return f

    # -- one stage
    def done(self, node: Node) -> dict | None:
        """The done record when the node's folder holds it finished (same hash), else None."""
        path = node.folder(self.dir) / "done.json"
        rec = json.loads(path.read_text()) if path.exists() else None
        if rec is not None and rec.get("hash") == node.hash and "outputs" in rec:  # (a stage's own done.json is not)
            return rec
        return None

    def cached(self, node: Node) -> dict | None:
        """done(), logged and indexed as skipped."""
        rec = self.done(node)
        if rec is not None:
            entry = self._entry(node)
            entry.update(status="done", cached=True, time_s=rec.get("time_s"))  # the time it took when it ran
            self.log(f"[yfpo run] {node.name}: done before, skipped ({entry['dir']})")
            self.write_index()
        return rec

    def run(self, node: Node, deps: dict[str, dict], wait: bool = True, quiet: bool = False) -> dict | None:
        """The node's done record: found finished, or made by running it now (under its lock). wait False: None
        when another process holds it (logged unless `quiet`). An error becomes a one-line StageFailed naming the
        stage and its folder."""
        lock = self.lock(node, wait=False)
        if lock is None and not wait:
            if not quiet:
                self.log(f"[yfpo run] {node.name}: another process is on it, coming back later")
            return None
        if lock is None:
            self.log(f"[yfpo run] {node.name}: another process is on it, waiting for it")
            lock = self.lock(node, wait=True)
        try:
            rec = self.cached(node)
            if rec is not None:
                return rec
            entry = self._begin(node)
            folder = node.folder(self.dir)
            t0 = time.time()
            try:
                outputs = node.run(node, folder, deps, self.dir)
            except (KeyboardInterrupt, StageFailed):
                raise
            except Exception as e:
                raise self._failed([entry], [folder], e) from e
            return self._finish(entry, node, outputs, time.time() - t0)
        finally:
            lock.close()

    def run_group(self, items: list[tuple[Node, dict]], quiet: set[str] = frozenset()) -> tuple[dict[str, dict], list]:
        """Nodes of one group (same group_run) done by one call: those not finished before and not held by another
        process go to `group_run` together. Returns ({name: done record}, the nodes another process holds; those
        named in `quiet` are not logged again)."""
        held, mine, records = [], [], {}  # mine: (node, deps, lock)
        try:
            for node, deps in items:
                lock = self.lock(node, wait=False)
                if lock is None:
                    if node.name not in quiet:
                        self.log(f"[yfpo run] {node.name}: another process is on it, coming back later")
                    held.append(node)
                elif (rec := self.cached(node)) is not None:
                    lock.close()
                    records[node.name] = rec
                else:
                    mine.append((node, deps, lock))
            if mine:
                entries = [self._begin(node) for node, _, _ in mine]
                folders = [node.folder(self.dir) for node, _, _ in mine]
                try:
                    results = mine[0][0].group_run([(n, f, d) for (n, d, _), f in zip(mine, folders)], self.dir)
                except (KeyboardInterrupt, StageFailed):
                    raise
                except Exception as e:
                    raise self._failed(entries, folders, e) from e
                for entry, (node, _, _), (outputs, secs) in zip(entries, mine, results):
                    records[node.name] = self._finish(entry, node, outputs, secs)
        finally:
            for *_, lock in mine:
                lock.close()
        return records, held

    def _begin(self, node: Node) -> dict:
        """Mark the stage running (index, log, hook) and record its config in the folder; returns its entry."""
        entry = self._entry(node)
        folder = node.folder(self.dir)
        resumed = folder.exists()
        if resumed:
            remove_stale_tmp(folder)  # temp files of writes a kill interrupted
        entry["status"] = "running"
        self.write_index()
        self.log(f"[yfpo run] {node.name}: {'resuming' if resumed else 'running'} -> {entry['dir']}")
        if self.hook is not None:
            self.hook(node.name)
        folder.mkdir(parents=True, exist_ok=True)
        record = {"name": node.name, "kind": node.kind, "hash": node.hash, "config": node.config}
        atomic_write_json(folder / "stage.json", {**record, "inputs": node.inputs, "started": now()})
        return entry

    def _failed(self, entries: list[dict], folders: list[Path], e: Exception) -> StageFailed:
        for entry in entries:
            entry["status"] = "failed"
        self.write_index()
        msg = str(e).splitlines()[0] if str(e) else ""
        names = " + ".join(entry["name"] for entry in entries)
        where = folders[0] if len(folders) == 1 else f"{folders[0].parent} ({', '.join(f.name for f in folders)})"
        return StageFailed(
            f"stage {names} failed in {where}: {type(e).__name__}: {msg} -- fix the cause and "
            "rerun the same command (finished stages are kept; this one resumes); "
            "--debug shows the traceback"
        )

    def _finish(self, entry: dict, node: Node, outputs: dict, elapsed: float) -> dict:
        rec = {
            "name": node.name,
            "kind": node.kind,
            "hash": node.hash,
            "config": node.config,
            "inputs": node.inputs,
            "outputs": outputs,
            "time_s": round(elapsed, 2),
            "finished": now(),
        }
        atomic_write_json(node.folder(self.dir) / "done.json", rec)  # last: marks the stage finished
        entry["status"] = "done"
        entry["time_s"] = rec["time_s"]
        self.write_index()
        return rec
