"""A recipe -> a plan: the build / derive / train / predict / eval steps its cells need.

Every step is keyed by its exact configuration: ``key = sha256(kind, config, keys of the steps
it reads)[:12]``, so two rows (or two recipes) whose runs are configured identically share one
step, and a change anywhere upstream (a preset value, a builder option) changes every key below
it. Pretrained weights enter a training's key by their content (:func:`.api.keyed_config`:
sha256, cached by size and mtime), not their path: moving a file reuses the runs, replacing it
re-runs them. Data files are fingerprinted when a step runs (:mod:`.execute`), not here, so a
plan can be printed without any data.

GPU-hours (:data:`THROUGHPUT`): a rough estimate, not a measurement: images per second of one
A100-class GPU in bf16 at the model's reference size, time scaled with the pixel count
(size / reference)^2; a training processes ``epochs x`` the pairs of its training splits (the
recipe's ``pairs`` counts, scaled by the run's group size N over the ``pairs_at_n`` they were
counted at: GRES Table 6's N = 1 trains on 1/8 of the images of N = 8; with ``epoch_unit`` "ref",
the recipe's ``refs`` count instead: MABP's epoch), a prediction the pairs
of its test split at 4x the training rate.
Builds, derivations and evaluations run on CPUs (0 GPU-hours).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from . import api
from .recipe import Benchmark, Recipe, Row

# (images / s when training, reference size): assumptions of grdkit, not measured (no GPU was
# lent when this was written); replace them with benchmarks/bench_train.py figures.
THROUGHPUT = {"grser": (40.0, 416), "lts": (120.0, 416), "mabp": (30.0, 480)}
PREDICT_SPEEDUP = 4.0


@dataclass
class Step:
    """One unit of work. ``needs``: missing options / features (then the step waits)."""

    kind: str                 # build | derive | train | predict | eval
    key: str
    config: dict
    deps: list[str]
    needs: list[str] = field(default_factory=list)
    gpu_hours: float = 0.0
    label: str = ""

    @property
    def id(self) -> str:
        return f"{self.kind}-{self.key}"


@dataclass
class Plan:
    recipe: Recipe
    steps: dict[str, Step]                  # id -> step, in execution order
    cells: dict[tuple[str, str], str]       # (row id, benchmark id) -> eval step id
    rows: list[str]                         # the selected rows
    smoke: bool = False

    def waiting(self, step_id: str) -> list[str]:
        """Everything the step or an upstream step waits for (sorted, unique)."""
        out, todo, seen = set(), [step_id], set()
        while todo:
            s = self.steps[todo.pop()]
            if s.id in seen:
                continue
            seen.add(s.id)
            out.update(s.needs)
            todo += s.deps
        return sorted(out)

    def gpu_hours(self) -> float:
        return sum(s.gpu_hours for s in self.steps.values())

    def weights(self) -> list[tuple[str, str, object, str | None]]:
        """Every pretrained weight the plan's trainings need, once each: ``(preset, option,
        value, problem or None)`` (:func:`.api.weight_problem`), in step order; none for a
        smoke plan (its encoders are the bundled ones)."""
        out = {}
        if self.smoke:
            return []
        for s in self.steps.values():
            if s.kind != "train":
                continue
            for k, v in api.required_weights(s.config["run"]).items():
                out.setdefault((s.config["run"]["preset"], k, str(v)),
                               (s.config["run"]["preset"], k, v, api.weight_problem(v)))
        return list(out.values())


def step_key(kind: str, config: dict, deps: list[str]) -> str:
    blob = json.dumps({"kind": kind, "config": config, "deps": deps}, sort_keys=True,
                      separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _add(steps: dict, kind: str, config: dict, deps: list[str], needs=(), gpu=0.0,
         label="", key_config: dict | None = None) -> str:
    key = step_key(kind, config if key_config is None else key_config, deps)
    s = Step(kind, key, config, deps, sorted(set(needs)), gpu, label)
    steps.setdefault(s.id, s)
    return s.id


def _scale(model: str, size: int) -> float:
    rate, ref = THROUGHPUT.get(model, (40.0, 416))
    return rate * (ref / size) ** 2


def build_plan(recipe: Recipe, rows: list[str] | None = None, smoke: bool = False,
               sets: dict | None = None) -> Plan:
    """The plan of ``recipe`` for ``rows`` (default: every row); see the module header.

    Args:
        smoke: apply :func:`.smoke.smoke_options` (tiny models, one step, CPU).
        sets: run options for every row (``--set``: a preset's local weights, or e.g.
            ``epochs``); they win over the recipe's.
    """
    from .smoke import SMOKE_BUILD, smoke_options

    sets = sets or {}
    selected = [recipe.row(r) for r in rows] if rows else list(recipe.rows)
    steps: dict[str, Step] = {}
    data_ids: dict[str, str] = {}

    def dataset(name: str) -> str:
        if name in data_ids:
            return data_ids[name]
        d = recipe.datasets[name]
        cfg = {"builder": d.builder, "source": d.source, "options": d.options}
        if smoke:
            cfg["smoke"] = SMOKE_BUILD
        needs = [] if api.builder_available(d.builder) else [f"builder:{d.builder}"]
        sid = _add(steps, "build", cfg, [], needs, label=f"{d.builder} from {d.source}/")
        if d.derive:
            needs = [] if api.derive_available(d.derive) else [f"derive:{d.derive}"]
            sid = _add(steps, "derive", {"derive": d.derive}, [sid], needs,
                       label=f"{d.derive} of {d.builder}")
        data_ids[name] = sid
        return sid

    def pairs(ref: str, group_size: int | None = None, epoch_unit: str = "sentence") -> float:
        """Pairs of a split; with ``group_size``: as a training at that N processes them; with
        ``epoch_unit`` "ref": one per ref (the recipe's ``refs`` count, when it gives one)."""
        name, split = ref.split("/")
        d = recipe.datasets[name]
        n = d.pairs.get(split, 0)
        if epoch_unit == "ref" and split in d.refs:
            n = d.refs[split]
        return n if group_size is None else n * group_size / d.pairs_at_n

    cells = {}
    for row in selected:
        if row.status != "ours":
            continue
        for b in recipe.benchmarks:
            cells[(row.id, b.id)] = _row_steps(recipe, row, b, steps, dataset, pairs, smoke,
                                               sets, smoke_options)
    return Plan(recipe, steps, cells, [r.id for r in selected], smoke)


def _row_steps(recipe: Recipe, row: Row, b: Benchmark, steps, dataset, pairs, smoke, sets,
               smoke_options) -> str:
    run = row.run
    options = {**b.train_options, **run.train, **sets}
    if smoke:
        options = smoke_options(run.model, options)
    cfg, missing = api.train_config(run.model, run.preset, options)
    if smoke:  # the toy size follows the run's (preset or row) size
        from .smoke import smoke_size

        options["size"] = smoke_size(cfg["size"])
        cfg, missing = api.train_config(run.model, run.preset, options)
    train_refs = [(dataset(ref.split("/")[0]), ref.split("/")[1]) for ref in b.train]
    if len(train_refs) > 1 and not api.union_available():
        missing.append("union")
    images = sorted({recipe.datasets[r.split("/")[0]].images for r in b.train})
    deps = sorted({d for d, _ in train_refs})
    rate = _scale(run.model, cfg["size"])
    gpu = 0.0 if smoke else cfg["epochs"] * sum(
        pairs(r, cfg["group_size"], cfg.get("epoch_unit", "sentence"))
        for r in b.train) / rate / 3600
    tcfg = {"run": cfg, "data": [f"{d}/{s}" for d, s in train_refs], "images": images}
    train_id = _add(steps, "train", tcfg, deps, missing, gpu,
                    f"{run.model} {run.preset or ''} on {' + '.join(b.train)}",
                    key_config={**tcfg, "run": api.keyed_config(cfg)})
    test_name, test_split = b.test.split("/")
    test_id = dataset(test_name)
    popts = {**b.predict_options, **run.predict}
    kwargs, pmissing = api.predict_options(popts, cfg)
    gpu = 0.0 if smoke else pairs(b.test) / (rate * PREDICT_SPEEDUP) / 3600
    pred_id = _add(steps, "predict", {"train": train_id, "data": f"{test_id}/{test_split}",
                                      "images": recipe.datasets[test_name].images,
                                      "options": kwargs,
                                      "pending": {k.split(":", 1)[1]: popts[k.split(":", 1)[1]]
                                                  for k in pmissing}},
                   [train_id, test_id], pmissing, gpu, f"{b.test}")
    cosod = any(api.cosod_metric(m.key) for m in b.metrics)
    needs = [] if b.profile in api.profiles() else [f"profile:{b.profile}"]
    return _add(steps, "eval", {"predict": pred_id, "gt": f"{test_id}/{test_split}",
                                "profile": b.profile, "cosod": cosod}, [pred_id, test_id],
                needs, 0.0, f"{b.test} ({b.profile}{', Co-SOD' if cosod else ''})")


def describe(step: Step, plan: Plan) -> str:
    """The CLI command equivalent to a step (what --dry-run prints; --launcher torchrun adds
    its prefix to the train commands)."""
    c = step.config
    if step.kind == "build":
        o = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in sorted(c["options"].items()))
        if c["builder"] == "grd":
            return f"grdkit convert d3 --anno-root $DATA/{c['source']} {o} --out data/{step.key}"
        if c["builder"] == "cosod":
            return (f"grdkit convert cosod --img-root $DATA/{c['source']}/image --masks "
                    f"$DATA/{c['source']}/binary {o} --out data/{step.key}")
        return f"grdkit build {c['builder']} --refer-root $DATA/{c['source']} {o} " \
               f"--out data/{step.key}"
    if step.kind == "derive":
        return f"(python API) {c['derive']} of data/{step.deps[0].split('-', 1)[1]} " \
               f"-> data/{step.key}"
    if step.kind == "train":
        r = c["run"]
        data = " ".join(f"--data data/{d.split('-', 1)[1]}/{s}.json"
                        for d, s in (x.rsplit("/", 1) for x in c["data"]))
        fields_ = " ".join(f"{k}={json.dumps(v)}" for k, v in sorted(r.items())
                           if k not in ("model", "model_args", "preset", "pending"))
        if r.get("pending"):
            fields_ += "\n      options this installation lacks " + " ".join(
                f"{k}={json.dumps(v)}" for k, v in sorted(r["pending"].items()))
        args = " ".join(f"{k}={json.dumps(v)}" for k, v in sorted(r["model_args"].items()))
        return (f"grdkit train {r['model']} {data} --img-root $DATA/{c['images'][0]} "
                f"--out runs/{step.key}\n      preset {r['preset']}; config {fields_}"
                f"\n      model options {args}")
    if step.kind == "predict":
        d, s = c["data"].rsplit("/", 1)
        opts = "".join(f" --{k.replace('_', '-')} {v}" for k, v in sorted(c["options"].items()))
        pend = "".join(f" --{k.replace('_', '-')} {v}" for k, v in sorted(c["pending"].items()))
        return (f"grdkit predict --checkpoint runs/{c['train'].split('-', 1)[1]} --data "
                f"data/{d.split('-', 1)[1]}/{s}.json --img-root $DATA/{c['images']}{opts} "
                f"--out preds/{step.key}.json{pend}")
    d, s = c["gt"].rsplit("/", 1)
    return (f"grdkit eval preds/{c['predict'].split('-', 1)[1]}.json --gt "
            f"data/{d.split('-', 1)[1]}/{s}.json --profile {c['profile']}"
            f"{' --cosod' if c['cosod'] else ''} --json evals/{step.key}.json")


def render_plan(plan: Plan) -> str:
    """The dry run: every step with its command, GPU-hours and what it waits for; then the
    cells and the total. Deterministic (pinned by tests)."""
    r = plan.recipe
    lines = [f"# {r.name}: {r.title}", f"# {r.cite}",
             f"# rows: {', '.join(plan.rows)}{' (smoke)' if plan.smoke else ''}"]
    if r.unavailable:
        lines.append(f"# not runnable: {' '.join(r.unavailable.split())}")
    lines.append("")
    weights = plan.weights()
    if weights:
        lines.append("pretrained weights (checked before any step; nothing is downloaded):")
        for preset, k, v, problem in weights:
            info = api.WEIGHTS.get(preset, {}).get(k, {})
            lines.append(f"  {k} ({preset}): {info.get('what', '?')}")
            lines.append(f"    format: {info.get('format', '?')}")
            lines.append(f"    get: {info.get('get', '?')}")
            given = {None: str(v), "not given": f"- (pass --set {k}=PATH)"}.get(
                problem, f"{v} (missing)")
            lines.append(f"    given: {given}")
        lines.append("")
    for s in plan.steps.values():
        wait = plan.waiting(s.id)
        lines.append(f"[{s.id}] {s.kind}: {s.label}  gpu-h {s.gpu_hours:.2f}"
                     + (f"  WAITS FOR {'; '.join(dict.fromkeys(api.PENDING.get(w, w) for w in wait))}"
                        if wait else ""))
        lines.append(f"    {describe(s, plan)}")
    lines.append("")
    for row in r.rows:
        if row.id not in plan.rows:
            continue
        if row.status != "ours":
            lines.append(f"row {row.id}: {row.status} (paper's numbers only)")
            continue
        for b in r.benchmarks:
            lines.append(f"row {row.id} x {b.id}: {plan.cells[(row.id, b.id)]}")
    lines.append("")
    lines.append(f"total: {len(plan.steps)} steps, "
                 f"{sum(s.kind == 'train' for s in plan.steps.values())} trainings, "
                 f"{plan.gpu_hours():.1f} GPU-hours (estimate; see grdkit.reproduce.plan)")
    return "\n".join(lines) + "\n"
