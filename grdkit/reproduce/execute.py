"""Run a plan: every step whose inputs are ready, skipping what is already complete.

Layout under ``--out``: ``data/<key>/`` (built or derived splits), ``runs/<key>/`` (training
run folders), ``preds/<key>.json``, ``evals/<key>.json`` (JSON reports) and ``steps/<id>.json``,
the completion record of each step: its config, its wall time, the fingerprint of its inputs (the released
files a build read, hashed; the outputs of the steps it read) and of its outputs. A step is
skipped when its record exists and its input fingerprint is unchanged, so an interrupted
reproduction picks up where it stopped (a training interrupted mid-run resumes from its last
checkpoint) and recipes run into the same ``--out`` share every common step. Records are
written atomically after the outputs, so a killed step is never taken as complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from ..io import atomic_write_text, open_regular, read_bytes, read_json
from . import api
from .plan import Plan, Step


@dataclass
class RunSummary:
    done: list[str] = field(default_factory=list)      # ran now
    skipped: list[str] = field(default_factory=list)   # complete before
    waiting: dict[str, list[str]] = field(default_factory=dict)


def _sha_file(path: Path) -> str:
    """sha256 of a regular file (the checked opener: a FIFO or a device is refused, and at most
    the size checked at opening is read)."""
    h = hashlib.sha256()
    with open_regular(path, "input file") as f:
        left = os.fstat(f.fileno()).st_size
        while left > 0 and (chunk := f.read(min(left, 1 << 20))):
            h.update(chunk)
            left -= len(chunk)
    return h.hexdigest()[:16]


def fingerprint(paths: list[Path]) -> str:
    """Content hash of files; a folder counts by its file names and sizes (image folders)."""
    h = hashlib.sha256()
    for p in paths:
        h.update(str(p.name).encode())
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                if f.is_file():
                    h.update(f"{f.relative_to(p)}:{f.stat().st_size}".encode())
        else:
            h.update(_sha_file(p).encode())
    return h.hexdigest()[:16]


def missing_data(plan: Plan, data_root: Path) -> list[str]:
    """What the plan's runnable steps need under ``data_root`` and is absent, one line each
    (with where to get it and the expected layout). Steps that wait for an option of another
    issue are left out: they will not run yet."""
    out = []
    for s in plan.steps.values():
        if plan.waiting(s.id):
            continue
        if s.kind == "build":
            c = s.config
            src = data_root / c["source"]
            lacking = [f for f in api.source_files(c["source"], c["options"])
                       if not (src / f).exists()]
            if lacking:
                out.append(f"{src}/ needs {', '.join(lacking)}: "
                           f"{api.SOURCES[c['source']]['get']}")
        elif s.kind in ("train", "predict"):
            for img in ([s.config["images"]] if s.kind == "predict" else s.config["images"]):
                if not (data_root / img).is_dir():
                    line = f"{data_root / img}/ : {api.IMAGE_HINT.get(img, 'image folder')}"
                    if line not in out:
                        out.append(line)
    return out


class Executor:
    """Runs the steps of plans into one ``out`` folder (see the module header)."""

    def __init__(self, out: str | Path, data_root: str | Path, device: str = "auto",
                 launcher: str | None = None, nproc: int = 1, log=None):
        self.out, self.data_root = Path(out), Path(data_root)
        self.device, self.launcher, self.nproc = device, launcher, nproc
        self.log = log or (lambda msg: None)

    def record_path(self, step: Step) -> Path:
        return self.out / "steps" / f"{step.id}.json"

    def record(self, step: Step) -> dict | None:
        """The step's record when it is well-formed (an object whose ``id``, ``kind``,
        ``inputs`` and ``outputs`` are strings, ``id`` and ``kind`` this step's); None when it
        is absent or not (a forged or damaged record: the step runs again)."""
        p = self.record_path(step)
        if not os.path.lexists(p):
            return None
        try:
            rec = read_json(p, "step record")
        except InputError:
            return None
        if not isinstance(rec, dict) or rec.get("id") != step.id or rec.get("kind") != step.kind \
                or not all(isinstance(rec.get(k), str) for k in ("inputs", "outputs")):
            return None
        return rec

    def _outputs_now(self, step: Step) -> str | None:
        """The fingerprint of the step's outputs as they are now (None: missing or unreadable),
        compared with the record's: an output changed since (a forged report, a replaced
        checkpoint) makes the step run again."""
        key = step.key
        try:
            if step.kind in ("build", "derive"):
                d = self.data_dir(step.id)
                return fingerprint(sorted(p for p in d.glob("*.json") if not
                                          p.name.startswith("."))) if d.is_dir() else None
            if step.kind == "train":
                run = self.out / "runs" / step.key
                return fingerprint([run / "config.json", run / "checkpoint.pt"])
            folder = {"predict": "preds", "eval": "evals"}.get(step.kind)
            return fingerprint([self.out / folder / f"{key}.json"]) if folder else None
        except InputError:
            return None

    def data_dir(self, step_id: str) -> Path:
        return self.out / "data" / step_id.split("-", 1)[1]

    def _inputs(self, step: Step) -> str:
        if step.kind == "build":
            c = step.config
            src = self.data_root / c["source"]
            return fingerprint([src / f for f in api.source_files(c["source"], c["options"])])
        h = hashlib.sha256()
        for d in step.deps:
            path = self.record_path_id(d)
            rec = read_json(path, "step record")
            if not isinstance(rec, dict) or not isinstance(rec.get("outputs"), str):
                raise InputError(path, "is not a step record (no 'outputs' string)",
                                 hint="delete it: that step runs again")
            h.update(rec["outputs"].encode())
        return h.hexdigest()[:16]

    def record_path_id(self, step_id: str) -> Path:
        return self.out / "steps" / f"{step_id}.json"

    def run(self, plan: Plan) -> RunSummary:
        """Run every step that does not wait for a missing option; see the module header.

        Raises:
            InputError: before any step, when a pretrained weight a training needs is not
                given or absent (all of them named).
        """
        bad = [f"{k} ({preset}): {problem}" for preset, k, _, problem in plan.weights()
               if problem is not None]
        if bad:
            raise InputError(None, "missing pretrained weights: " + "; ".join(bad),
                             hint="pass them with --set KEY=PATH (grdkit reproduce NAME "
                                  "--dry-run says what each is and where to get it)")
        summary = RunSummary()
        for step in plan.steps.values():
            wait = plan.waiting(step.id)
            if wait:
                summary.waiting[step.id] = wait
                continue
            inputs = self._inputs(step)
            rec = self.record(step)
            if rec is not None and rec["inputs"] == inputs \
                    and rec["outputs"] == self._outputs_now(step):
                summary.skipped.append(step.id)
                continue
            if os.path.lexists(self.record_path(step)) and rec is None:
                self.log(f"{step.id}: its record is not a valid step record; running it again")
            self.log(f"{step.id}: {step.kind} {step.label}")
            t0 = time.perf_counter()
            outputs = getattr(self, f"_{step.kind}")(step, plan, inputs)
            atomic_write_text(self.record_path(step), json.dumps(
                {"id": step.id, "kind": step.kind, "config": step.config, "inputs": inputs,
                 "outputs": outputs, "seconds": round(time.perf_counter() - t0, 2)},
                indent=1, sort_keys=True, default=str) + "\n")
            summary.done.append(step.id)
        return summary

    # -- the steps ---------------------------------------------------------------------------
    def _build(self, step: Step, plan: Plan, inputs: str) -> str:
        c = step.config
        out = self.data_dir(step.id)
        paths = api.build(c["builder"], self.data_root / c["source"], c["options"], out)
        return fingerprint(sorted(p for p in paths if p.suffix == ".json"))

    def _derive(self, step: Step, plan: Plan, inputs: str) -> str:
        out = self.data_dir(step.id)
        paths = api.derive(step.config["derive"], self.data_dir(step.deps[0]), out)
        return fingerprint(sorted(p for p in paths if p.suffix == ".json"))

    def _split(self, ref: str) -> Path:
        d, s = ref.rsplit("/", 1)
        return self.data_dir(d) / f"{s}.json"

    def _train(self, step: Step, plan: Plan, inputs: str) -> str:
        c = step.config
        run = self.out / "runs" / step.key
        started = run / "reproduce-inputs.txt"
        resume = (run / "checkpoint.pt").exists() and started.exists() \
            and read_bytes(started, "reproduce-inputs.txt", limit=4096) == inputs.encode()
        if run.exists() and not resume:
            shutil.rmtree(run)  # a partial run of other inputs (or one without checkpoint)
        run.mkdir(parents=True, exist_ok=True)
        atomic_write_text(started, inputs)
        data = [self._split(r) for r in c["data"]]
        img_root = self.data_root / c["images"][0]
        if len(c["images"]) > 1:
            raise InputError(None, f"{step.id}: training sets with different image folders "
                             f"({', '.join(c['images'])}) are not supported")
        if self.launcher == "torchrun":
            req = self.out / "steps" / f"{step.id}.request.json"
            atomic_write_text(req, json.dumps({"cfg": c["run"], "data": [str(p) for p in data],
                                               "img_root": str(img_root), "out": str(run),
                                               "resume": resume}) + "\n")
            cmd = ["torchrun", f"--nproc_per_node={self.nproc}", "-m",
                   "grdkit.reproduce.execute", str(req)]
            self.log(" ".join(cmd))
            if subprocess.run(cmd, check=False).returncode != 0:
                raise InputError(None, f"{step.id}: torchrun failed (command above)")
        else:
            cfg = dict(c["run"])
            if self.device != "auto":
                cfg["device"] = self.device
            api.train(cfg, data, img_root, run, resume)
        return fingerprint([run / "config.json", run / "checkpoint.pt"])

    def _predict(self, step: Step, plan: Plan, inputs: str) -> str:
        c = step.config
        run = self.out / "runs" / c["train"].split("-", 1)[1]
        preds = api.predict(run, self._split(c["data"]), self.data_root / c["images"],
                            c["options"], self.device)
        path = self.out / "preds" / f"{step.key}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        api.write_predictions(preds, path)
        return fingerprint([path])

    def _eval(self, step: Step, plan: Plan, inputs: str) -> str:
        c = step.config
        preds = self.out / "preds" / f"{c['predict'].split('-', 1)[1]}.json"
        report = api.evaluate(preds, self._split(c["gt"]), c["profile"], c["cosod"])
        path = self.out / "evals" / f"{step.key}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, report.to_json())
        return fingerprint([path])


def _torchrun_main(request: str) -> None:
    """Entry point of ``--launcher torchrun``: one training from a request file."""
    r = read_json(request, "torchrun request")
    api.train(r["cfg"], [Path(p) for p in r["data"]], Path(r["img_root"]), Path(r["out"]),
              r["resume"])


if __name__ == "__main__":  # pragma: no cover - run by torchrun
    _torchrun_main(sys.argv[1])
