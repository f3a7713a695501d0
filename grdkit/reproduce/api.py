"""The one place where recipe fields become grdkit API calls, and what this installation has.

A recipe names options as the CLI and the issues name them (``rank``, ``group_size``,
``max_words``, ``nt_depth``, profile ``rela-2023-05`` ...). This module maps each to a call:

* datasets: :data:`SOURCES` (the released layout under ``--data-root``), :func:`build` (the
  builders of :mod:`grdkit.builders`), :func:`derive` (the RES setting);
* training: :func:`train_config` (a recipe run -> :class:`~grdkit.baselines.run.TrainConfig`:
  each option goes to the config field or the model-constructor option of that name) and
  :func:`train` (:func:`grdkit.baselines.engine.train`);
* inference: :func:`predict` (:func:`grdkit.baselines.predict.predict` with the predict-time
  options it takes);
* scoring: :func:`evaluate` (:func:`grdkit.evaluators.evaluate` under a named profile).

Whether an option exists is probed, not hard-coded: an option is available when
:class:`TrainConfig` has the field or the model's constructor takes it (predict-time options:
when :func:`~grdkit.baselines.predict.predict` takes them); a profile when the evaluator lists
it; a builder when the registry has it. What is missing is reported as "waits for" with the
issue that adds it (:data:`PENDING`): a recipe written for a newer grdkit plans, and its rows
that need what is missing are listed, not run.
"""

from __future__ import annotations

import inspect
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from ..errors import InputError

# Options and features a recipe may use that this installation lacks (a recipe written for a
# newer grdkit), with what adds them; shown as "waits for ...". Every option the shipped recipes
# use exists, so this is empty; tests/test_reproduce.py checks that no shipped cell waits.
PENDING: dict[str, str] = {}

# The released layout each recipe 'source' expects under --data-root, and where to get it.
SOURCES: dict[str, dict] = {
    "refcoco": {"files": ("instances.json", "refs({split_by}).p"),
                "get": "RefCOCO from the refer toolkit (github.com/lichengunc/refer, data/refcoco)"},
    "refcoco+": {"files": ("instances.json", "refs({split_by}).p"),
                 "get": "RefCOCO+ from the refer toolkit (github.com/lichengunc/refer, "
                        "data/refcoco+)"},
    "refcocog": {"files": ("instances.json", "refs({split_by}).p"),
                 "get": "RefCOCOg from the refer toolkit (github.com/lichengunc/refer, "
                        "data/refcocog)"},
    "grefcoco": {"files": ("instances.json", "grefs({split_by}).json"),
                 "get": "gRefCOCO (github.com/henghuiding/gRefCOCO): grefs(unc).json and "
                        "instances.json"},
    "d3": {"files": ("sentences.pkl", "annotations.pkl", "images.pkl", "groups.pkl"),
           "get": "D³ (github.com/shikras/d-cube): the four pickles of d3_pkl/"},
    "coca": {"files": ("image", "binary"),
             "get": "CoCA (Co-SOD): image/<group>/*.jpg and binary/<group>/*.png"},
}
IMAGE_HINT = {"images/train2014": "COCO train2014 images (cocodataset.org)",
              "d3/images": "D³ images (d3_images/ of the release)",
              "coca/image": "the CoCA image folders"}

# Placeholders for the local weights a preset requires (nothing is downloaded).
PLACEHOLDER = "<{}: pass --set {}=PATH>"

# Every pretrained weight a preset requires: what it is, the file format grdkit reads, where to
# get it. Checked before any step runs (:func:`check_weights`); printed by --dry-run.
WEIGHTS: dict[str, dict[str, dict[str, str]]] = {
    "gres-paper": {
        "vision_weights": {
            "what": "Swin-B, ImageNet-22K (GRES §5.2: LAVT's encoder)",
            "format": "a file: PyTorch state dict of timm's swin_base_patch4_window12_384 "
                      "(torch.save of model.state_dict(); read with weights_only=True)",
            "get": "timm swin_base_patch4_window12_384.ms_in22k (Hugging Face timm/...), saved "
                   "where the network is allowed: torch.save(timm.create_model(name, "
                   "pretrained=True).state_dict(), PATH)"},
        "text": {
            "what": "BERT-base, uncased (GRES §3.1)",
            "format": "a folder transformers.AutoModel.from_pretrained reads offline "
                      "(config.json, weights, tokenizer files)",
            "get": "google-bert/bert-base-uncased (Hugging Face), e.g. save_pretrained(PATH)"}},
    "mabp-paper": {
        "vision_weights": {
            "what": "Swin-B, ImageNet-22K (MABP §IV-A)",
            "format": "a file: PyTorch state dict of timm's swin_base_patch4_window12_384 "
                      "(read with weights_only=True)",
            "get": "timm swin_base_patch4_window12_384.ms_in22k (Hugging Face timm/...), saved "
                   "as a state dict (see gres-paper)"},
        "text": {
            "what": "BERT-base, uncased (MABP §III-A, HuggingFace weights)",
            "format": "a folder transformers.AutoModel.from_pretrained reads offline",
            "get": "google-bert/bert-base-uncased (Hugging Face)"}},
    "lts-paper": {
        "vision_weights": {
            "what": "Darknet53, COCO-pretrained (LTS §4.1; MCN's backbone: YOLOv3's)",
            "format": "a file: timm darknet53 state dict written by grdkit weights convert "
                      "darknet53 yolov3.weights OUT (Darknet's binary read as src/parser.c)",
            "get": "yolov3.weights (pjreddie.com/media/files/yolov3.weights, the Darknet / "
                   "YOLOv3 release MCN starts from), then grdkit weights convert"},
        "text": {
            "what": "GloVe word vectors, 300-d (LTS §3.1)",
            "format": "the unzipped text file, one 'word v_1 ... v_300' per line (UTF-8)",
            "get": "glove.840B.300d.txt or glove.6B.300d.txt (nlp.stanford.edu/projects/glove; "
                   "the paper does not say which)"}},
}
DIGEST_CACHE = "digests.json"  # under $XDG_CACHE_HOME/grdkit (default ~/.cache/grdkit)


# ------------------------------------------------------------------ datasets
def builder_available(builder: str) -> bool:
    """Whether this installation can build ``builder`` (registry name, ``grd`` or ``cosod``)."""
    from ..registry import DATASETS

    return builder in DATASETS


def derive_available(kind: str) -> bool:
    """Whether the derivation exists (``res-setting``: :func:`grdkit.format.derive.res_setting`)."""
    return kind == "res-setting"


def source_files(source: str, options: dict) -> list[str]:
    """The files / folders a source must hold (relative to its folder)."""
    spec = SOURCES.get(source)
    if spec is None:
        raise InputError(None, f"unknown data source {source!r}; known: {', '.join(SOURCES)}")
    split_by = options.get("split_by", "unc")
    return [f.format(split_by=split_by) for f in spec["files"]]


def build(builder: str, source_dir: Path, options: dict, out: Path) -> list[Path]:
    """Build a dataset from its released files into ``out`` (``<split>.json`` + card)."""
    from ..builders import build_cosod, build_dataset, convert_d3, default_expressions
    from ..export import write_dataset
    from ..registry import dataset_spec

    opts = dict(options)
    kind = dataset_spec(builder).builder
    if kind == "d3":
        from ..sources.d3 import read_d3

        data = read_d3(source_dir)
        ds = convert_d3(data, opts.pop("setting", "intra"),
                        opts.pop("expressions", None) or default_expressions(data))
        datasets = {"test": ds}
    elif kind == "files":
        ds, _ = build_cosod(source_dir / "image", source_dir / "binary",
                            opts.pop("negatives", 0), opts.pop("seed", 0))
        datasets = {"test": ds}
    else:
        datasets, _ = build_dataset(builder, source_dir, opts.pop("split_by", None), **opts)
        opts = {}
    if opts:
        raise InputError(None, f"builder {builder} takes no option {', '.join(sorted(opts))}")
    return write_dataset(datasets, out)


def derive(kind: str, src: Path, out: Path) -> list[Path]:
    """The RES setting of every split in ``src`` (positives only) written to ``out``."""
    from ..export import write_dataset
    from ..format import load_splits
    from ..format.derive import res_setting

    return write_dataset({s: res_setting(d)[0] for s, d in load_splits(src).items()}, out)


# ------------------------------------------------------------------ training
def _config_fields() -> set[str]:
    from ..baselines.run import TrainConfig

    return {f.name for f in fields(TrainConfig)}


def _model_takes(model: str, key: str) -> bool:
    from ..baselines import model_options

    return bool(model_options(model, {key: None}))


def model_defaults(model: str) -> dict:
    """The keyword defaults of a model's constructor (``image_size`` excluded: the run's
    ``size`` sets it)."""
    from ..baselines import model_class

    params = inspect.signature(model_class(model).__init__).parameters
    return {k: p.default for k, p in params.items()
            if k not in ("self", "image_size") and p.default is not inspect.Parameter.empty}


def train_config(model: str, preset: str | None, options: dict) -> tuple[dict, list[str]]:
    """A run's resolved :class:`TrainConfig` (as a dict) and the options still missing.

    ``options``: recipe options (the benchmark's train_options, run.train), the user's
    ``--set`` values and smoke settings, each a TrainConfig field or a model-constructor
    option. A local path a preset requires and nobody gave becomes a placeholder (fine for a
    dry run; :func:`check_placeholders` refuses it for a real run). Options this installation
    does not have are kept under ``"pending"`` (and listed as ``train:<name>`` in the second
    value), so two rows that differ only by them keep distinct step keys.
    """
    from ..baselines.options import check_run_option, check_run_options
    from ..baselines.run import PRESETS, TrainConfig, apply_preset

    options = check_run_options(options, "run options")  # the one schema (class E)
    preset = check_run_option("preset", preset, "run preset")
    cfg_fields = _config_fields() - {"model", "preset", "model_args"}
    config, args, missing, pending = {}, {}, [], {}
    for k, v in options.items():
        # like grdkit train: an option both places name (group_size, seed) goes to both
        if k in cfg_fields or _model_takes(model, k):
            if k in cfg_fields:
                config[k] = v
            if _model_takes(model, k):
                args[k] = v
        else:
            missing.append(f"train:{k}")
            pending[k] = v
    required = PRESETS.get(preset, {}).get("required", ()) if preset else ()
    for k in required:
        args.setdefault(k, PLACEHOLDER.format(k, k))
    cfg = TrainConfig(model=model, preset=preset, model_args=args, **config)
    cfg = asdict(apply_preset(cfg, set(config) | set(args)))
    for k in ("group_size", "seed"):  # as grdkit train passes them: the model sees the run's
        if _model_takes(model, k):
            cfg["model_args"][k] = cfg[k]
    # every constructor option spelled out, so that a row stating a default ("rank: pos+neg")
    # and a row leaving it out resolve to one config, hence one step key
    cfg["model_args"] = {**model_defaults(model), **cfg["model_args"]}
    if pending:  # options this installation lacks stay in the config (and so in the step key)
        cfg["pending"] = pending
    return cfg, missing


def known_option(model: str, key: str) -> bool:
    """Whether ``key`` is a run option of ``model`` here (TrainConfig field or constructor
    option)."""
    return key in _config_fields() - {"model", "preset", "model_args"} or _model_takes(model,
                                                                                         key)


def required_weights(cfg: dict) -> dict[str, str]:
    """``{option: value}`` of the local weights the run's preset requires (values may be
    placeholders)."""
    from ..baselines.run import PRESETS

    preset = cfg.get("preset")
    req = PRESETS.get(preset, {}).get("required", ()) if preset else ()
    return {k: cfg["model_args"].get(k) for k in req}


NAMED_WEIGHTS = ("bundled", "all-MiniLM-L6-v2")  # installed with grdkit[baselines], no file


def weight_problem(value: Any) -> str | None:
    """Why a weights value is unusable (a placeholder: not given; a path: absent), or None
    (also for the weights bundled by installed packages, :data:`NAMED_WEIGHTS`)."""
    if isinstance(value, str) and value.startswith("<") and "--set" in value:
        return "not given"
    if value in NAMED_WEIGHTS:
        return None
    if value is None or not Path(str(value)).exists():
        return f"{value} does not exist"
    return None


def _cache_dir() -> Path:
    import os

    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "grdkit"


def file_digest(path: str | Path) -> str:
    """sha256 of a weights file (of a folder: of its files' relative names and digests, in
    sorted order), cached by (real path, size, mtime) in ``$XDG_CACHE_HOME/grdkit/digests.json``
    so a 2 GB GloVe file is hashed once. A cache that cannot be read or written is ignored."""
    import hashlib
    import json
    import os

    from ..io import atomic_write_text

    p = Path(os.path.realpath(path))
    if p.is_dir():
        h = hashlib.sha256()
        for f in sorted(x for x in p.rglob("*") if x.is_file()):
            h.update(f"{f.relative_to(p).as_posix()}\0{file_digest(f)}\n".encode())
        return h.hexdigest()
    st = p.stat()
    key = f"{p}|{st.st_size}|{st.st_mtime_ns}"
    cache_file = _cache_dir() / DIGEST_CACHE
    try:
        cache = json.loads(cache_file.read_text(encoding="utf-8"))
        cache = cache if isinstance(cache, dict) else {}
    except (OSError, ValueError):
        cache = {}
    if isinstance(cache.get(key), str):
        return cache[key]
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    digest = h.hexdigest()
    cache = {k: v for k, v in cache.items() if not k.startswith(f"{p}|")}
    cache[key] = digest
    try:
        atomic_write_text(cache_file, json.dumps(cache, sort_keys=True) + "\n")
    except OSError:
        pass  # a read-only home: hash again next time
    return digest


def keyed_config(cfg: dict) -> dict:
    """``cfg`` as a step key sees it: each existing weights path a preset requires replaced by
    its content hash (``sha256:...``), so moving a file keeps the key and replacing it changes
    the key (stale runs are never reused)."""
    weights = {k: v for k, v in required_weights(cfg).items()
               if v not in NAMED_WEIGHTS and weight_problem(v) is None}
    if not weights:
        return cfg
    args = dict(cfg["model_args"])
    for k, v in weights.items():
        args[k] = "sha256:" + file_digest(v)
    return {**cfg, "model_args": args}


def check_placeholders(cfg: dict) -> None:
    """Refuse a config that still holds a placeholder for local weights."""
    for k, v in cfg["model_args"].items():
        if isinstance(v, str) and v.startswith("<") and "--set" in v:
            raise InputError(None, f"preset {cfg['preset']} needs {k} (a local path)",
                             hint=f"pass --set {k}=PATH")


def union_available() -> bool:
    """Whether :func:`grdkit.baselines.engine.train` takes several training sets (issue 17:
    ``train(cfg, data=[A, B, C])``); probed from its ``data`` annotation."""
    from ..baselines import engine

    ann = str(inspect.signature(engine.train).parameters["data"].annotation)
    return "list" in ann or "Sequence" in ann


def train(cfg: dict, data: list[Path], img_root: Path, out: Path, resume: bool) -> dict:
    """Train a run (:func:`grdkit.baselines.engine.train`), resuming an interrupted one."""
    from ..baselines.engine import train as engine_train
    from ..baselines.run import TrainConfig

    check_placeholders(cfg)
    if cfg.get("pending"):
        raise InputError(None, f"this installation has no option {', '.join(cfg['pending'])}")
    return engine_train(TrainConfig(**cfg), data if len(data) > 1 else data[0], img_root, out,
                        resume=resume)


# ------------------------------------------------------------------ inference
def _predict_params() -> set[str]:
    from ..baselines.predict import predict as fn

    return set(inspect.signature(fn).parameters)


def predict_options(options: dict, cfg: dict) -> tuple[dict, list[str]]:
    """Predict-time options -> (kwargs of predict, missing). An option equal to what the run was
    trained with (``rank`` of the model, ``group_size`` of the config) needs no override."""
    kwargs, missing = {}, []
    params = _predict_params()
    for k, v in options.items():
        trained = cfg["model_args"].get(k, cfg.get(k))
        if trained == v:
            continue
        if k in params:
            kwargs[k] = v
        else:
            missing.append(f"predict:{k}")
    return kwargs, missing


def predict(run_dir: Path, data: Path, img_root: Path, kwargs: dict, device: str) -> list[dict]:
    """Predictions of a run (:func:`grdkit.baselines.predict.predict`)."""
    from ..baselines.predict import predict as fn

    return fn(run_dir, data, img_root, device=device, workers=0, **kwargs)


def write_predictions(preds: list[dict], path: Path) -> None:
    from ..baselines.predict import write_predictions as fn

    fn(preds, path)


# ------------------------------------------------------------------ scoring
def profiles() -> tuple[str, ...]:
    """The evaluation profiles (:data:`grdkit.evaluators.profiles.PROFILES`)."""
    from ..evaluators.profiles import PROFILES

    return tuple(PROFILES)


def cosod_metric(key: str) -> bool:
    from ..evaluators.cosod import COSOD_METRICS

    return key in COSOD_METRICS


def evaluate(preds: Path, gt: Path, profile: str, cosod: bool) -> Any:
    """The report of ``preds`` on ``gt`` under ``profile`` (:func:`grdkit.evaluators.evaluate`)."""
    from ..evaluators import evaluate as fn

    key = "profile" if "profile" in inspect.signature(fn).parameters else "protocol"
    return fn(preds, gt, cosod=cosod, **{key: profile})
