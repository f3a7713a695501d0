"""A training run's definition: its config (:class:`TrainConfig`, ``config.json``), the paper
presets, the model it builds, and rebuilding a saved run exactly (:func:`load_run`).

Shared by training (:mod:`.engine`) and inference (:mod:`.predict`), so both rebuild a model the
same way.
"""

from __future__ import annotations

import contextlib
import io
import pickle
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import torch

from ..errors import InputError
from ..io import LIMITS, read_bytes, read_json
from . import MODELS, model_class, model_default, model_options


def pick_device(name: str = "auto") -> torch.device:
    """``auto``: CUDA when available, else CPU. ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError(None, "device cuda was asked for but no CUDA device is available",
                         hint="use device auto or cpu")
    return torch.device(name)


@dataclass
class TrainConfig:
    """Options of a training run (saved as ``config.json``).

    Defaults follow GRES §5.2 (group size 8, 416x416, AdamW lr 5e-5, weight decay 0.01,
    polynomial decay, no augmentation). Settings no paper states, with their source:

    * ``poly_power`` 0.9: the usual polynomial-decay power (DeepLab); GRES says "polynomial".
    * ``clip`` 1.0: gradient-norm clipping, grdkit's choice for stable CPU runs (0 disables);
      neither GRES nor LTS mentions clipping, so the gres-paper and lts-paper presets set 0.
    * ``data_sources``: filled in by training (one record per training split; several splits are
      trained on as their union, GRES §5.3).
    * ``threshold``: None means the model's ``default_threshold`` (0.25 for LTS and GRSer: LTS
      §3.4 binarises at 0.25; GRES publishes no threshold for GRSer, so it uses LTS's, and the
      gres-paper preset sets 0.5). The resolved value is what ``config.json`` records and
      ``predict`` uses.
    * ``optimizer`` / ``schedule`` / ``milestones`` / ``gamma``: ``adamw`` + ``poly`` (GRES) or
      ``adam`` + ``step`` (LTS §4.1: x0.1 at epoch 30); milestones are epochs, converted to
      optimiser steps with the epoch's step count. Saved in ``config.json``; a resume must use
      the same values.
    * ``workers``: DataLoader worker processes (0: load in the main process).
    * ``batch_size``: items (groups) per optimiser step in total, over every process and
      accumulation micro-step (None: one per process and micro-step); ``accum_steps``: gradient
      accumulation micro-steps per optimiser step. The engine splits and weights them exactly
      (:mod:`.engine` header); ``config.json`` records the resolved ``batch_size``.
    """

    model: str = "lts"
    epochs: int = 10
    batch_size: int | None = None  # groups per optimiser step IN TOTAL (issue 19; engine header)
    lr: float = 5e-5
    weight_decay: float = 0.01
    poly_power: float = 0.9
    clip: float = 1.0
    group_size: int = 8
    size: int = 416
    repeats: int = 1             # items per expression (or ref) per epoch
    # issue 29 point 1: "sentence" (every expression once per epoch; LTS, GRSer) or "ref" (every
    # ref once, one of its sentences drawn per seed and epoch: MABP's official loader)
    epoch_unit: str = "sentence"
    seed: int = 0
    device: str = "auto"
    threshold: float | None = None
    log_every: int = 10
    max_steps: int | None = None  # stop early (smoke tests; 0 saves the initial model)
    workers: int = 2
    channels_last: bool = False
    compile: bool = False
    preset: str | None = None
    model_args: dict = field(default_factory=dict)
    # issue 19: gradient accumulation (batch_size above is the total per optimiser step)
    accum_steps: int = 1
    # issue 17: the training sets (several: their union, GRES §5.3), as training recorded them
    data_sources: list[dict] = field(default_factory=list)
    # issue 18: optimiser and learning-rate schedule (see :func:`.engine.make_optimizer`)
    optimizer: str = "adamw"     # "adamw" (GRES §5.2) | "adam" (LTS §4.1)
    schedule: str = "poly"       # "poly" (power poly_power) | "step" (x gamma at each milestone)
    milestones: list[int] = field(default_factory=list)  # epochs at which "step" multiplies by gamma
    gamma: float = 0.1


# Settings each paper states. ``config``: TrainConfig fields; ``model``: model options;
# ``required``: options the user must give (local weights: nothing is downloaded).
PRESETS: dict[str, dict] = {
    # GRES (ICCV 2023) §5.2: Swin-B (LAVT encoder), BERT-base, C_v = 512, N = 8, 416 x 416,
    # AdamW lr 5e-5, weight decay 0.01, polynomial decay, 80 epochs, no augmentation, margin
    # m = 1; batch 4 groups: "in total" is what the engine's batch_size means (the engine divides it
    # across DDP processes and accumulation micro-steps). Not stated, so:
    # clip 0 (the paper names no clipping; --clip stays an option); threshold 0.5 (the LAVT
    # decoder GRSer follows takes the argmax of two classes, i.e. p > 0.5: yz93/LAVT-RIS
    # test.py @874fe4f); mirror lambda 0.5 and eq. 2's mean pooling (ours, see grser.py); the
    # mirror pass fused with L_anti (§3.4); LAVT's weight-decay exemptions ("following [31, 44]",
    # LAVT-RIS train.py @1da0af9).
    "gres-paper": {"model": "grser",
                   "config": {"group_size": 8, "size": 416, "lr": 5e-5, "weight_decay": 0.01,
                              "epochs": 80, "batch_size": 4, "clip": 0.0, "threshold": 0.5},
                   "model_args": {"vision": "swin_base_patch4_window12_384", "fusion": "pwam",
                                  "train_text": True, "width": 512, "margin": 1.0,
                                  "mirror_weight": 0.5, "rank": "pos+neg", "pool": "mean",
                                  "anchor": "prototype", "mirror_fusion": "anti",
                                  "decay_exempt": True},
                   "required": ("vision_weights", "text")},
    # LTS (CVPR 2021) §3-4.1: Darknet53 (COCO-pretrained YOLOv3 / MCN weights converted by
    # grdkit weights convert: Darknet's LeakyReLU 0.1 and 0-1 RGB input), 416 x 416, GloVe-300
    # (trained: "initialized by GloVe", §3.1) + 1024-d bi-GRU, sentences cut at
    # 15 words (RefCOCO / RefCOCO+; give max_words 20 for RefCOCOg), d_k = 1024, Adam lr 1e-3
    # x0.1 at epoch 30, 45 epochs, batch 18, threshold 0.25 (§3.4). Not stated by the paper:
    # weight decay and clipping (none here), single images (RES: group size 1). Sources: the
    # grdkit.baselines.lts module header.
    # MABP (TMM) §IV-A: 480 x 480, AdamW 2e-5, 30 epochs, batch 42 images (one image per item:
    # group_size 1) per optimiser step in total, whatever the number of processes (the engine
    # splits the 42 over processes x accum_steps, unevenly if need be, with exact per-item loss
    # weighting; raise accum_steps to fit memory). Drop-path 0.3: official gres-MABP.yaml (timm's
    # Swin default is 0.1). The official config trains 40 epochs at batch
    # 18 with lr constant to epoch 25 then cosine, which this engine's polynomial decay cannot
    # express. Weight decay 0.05 and full-model gradient clipping 0.01: official config (the
    # paper states neither). Swin-B + PWAM language fusion (§III) and BERT-base fine-tuned (local
    # paths), threshold 0.5, the NT branch deciding by its first indicator (the paper's numbers,
    # official README), sentence MLP over the words (§III-D2), deep supervision depth 3 on both
    # branches (Table VI); an epoch counts refs, one sentence drawn per ref (epoch_unit "ref",
    # official refcoco_mapper.py). Sources: the grdkit.baselines.mabp module header.
    "mabp-paper": {"model": "mabp",
                   "config": {"size": 480, "lr": 2e-5, "epochs": 30, "batch_size": 42,
                              "weight_decay": 0.05, "clip": 0.01, "group_size": 1,
                              "epoch_unit": "ref"},
                   "model_args": {"vision": "swin_base_patch4_window12_384", "train_text": True,
                                  "fusion": "pwam", "width": 256, "heads": 8, "regions": 4,
                                  "layers": 3, "enc_layers": 6, "enc_ffn": 1024, "dec_ffn": 2048,
                                  "nt_rule": "first", "nt_sentence": "words", "nt_hidden": 2,
                                  "main_depth": 3, "nt_depth": 3, "decay_exempt": True,
                                  "drop_path": 0.3},
                   "required": ("vision_weights", "text")},
    "lts-paper": {"model": "lts",
                  "config": {"size": 416, "threshold": 0.25, "optimizer": "adam", "lr": 1e-3,
                             "weight_decay": 0.0, "schedule": "step", "milestones": [30],
                             "gamma": 0.1, "epochs": 45, "batch_size": 18, "group_size": 1,
                             "clip": 0.0},
                  "model_args": {"vision": "darknet53", "d_k": 1024, "fusion": "paper",
                                 "relevance": "literal", "locate": "filter",
                                 "loss_reduction": "sum", "max_words": 15, "leaky_slope": 0.1,
                                 "vision_norm": "unit", "train_text": True, "word_dim": 300},
                  "required": ("vision_weights", "text")},
}


# Each model's own optimiser and schedule, used by ``grdkit train`` without --preset (issue 25):
# field -> (value, source). The presets above add the rest of a paper's setting (backbone,
# epochs, batch); these are only the optimisation recipe, so a run on toy settings still
# optimises the way its paper does.
RECIPES: dict[str, dict[str, tuple]] = {
    "lts": {"optimizer": ("adam", "LTS §4.1"), "lr": (1e-3, "LTS §4.1"),
            "schedule": ("step", "LTS §4.1"), "milestones": ([30], "LTS §4.1"),
            "gamma": (0.1, "LTS §4.1"),
            "weight_decay": (0.0, "ours: LTS states none")},
    "grser": {"optimizer": ("adamw", "GRES §5.2"), "lr": (5e-5, "GRES §5.2"),
              "schedule": ("poly", "GRES §5.2 (polynomial)"),
              "poly_power": (0.9, "ours: DeepLab's usual power, GRES states none"),
              "weight_decay": (0.01, "GRES §5.2")},
    "mabp": {"optimizer": ("adamw", "MABP §IV-A"), "lr": (2e-5, "MABP §IV-A"),
             "weight_decay": (0.05, "MABP official config"),
             "schedule": ("poly", ("ours: the official constant-then-cosine schedule is not "
                                  "available in this engine")),
             "poly_power": (0.9, "ours")},
}


def apply_recipe(cfg: TrainConfig, explicit: set[str] = frozenset()) -> TrainConfig:
    """``cfg`` with its model's optimisation recipe (:data:`RECIPES`) filled in, except the
    fields named in ``explicit`` (:func:`describe_recipe` names the sources in the log).

    Raises:
        InputError: a model without a recipe.
    """
    recipe = RECIPES.get(cfg.model)
    if recipe is None:
        raise InputError(None, f"no training recipe for model {cfg.model!r}; choose from "
                         f"{sorted(RECIPES)}")
    own = {k: v for k, (v, _) in recipe.items() if k not in explicit}
    schedule = own.get("schedule", cfg.schedule)
    if "schedule" in recipe and schedule != recipe["schedule"][0]:
        # another schedule was given: the recipe's settings of its own schedule do not apply
        for k in {"step": ("milestones", "gamma"), "poly": ("poly_power",)}.get(
                recipe["schedule"][0], ()):
            own.pop(k, None)
    return replace(cfg, **own)


def describe_recipe(cfg: TrainConfig) -> str:
    """One log line naming the run's optimisation recipe and where each value comes from: the
    preset (sources in :data:`PRESETS`), the model's recipe (:data:`RECIPES`, a paper section,
    the official config, or ours), or "given" where the run sets another value."""
    recipe = RECIPES.get(cfg.model, {})
    keys = ["optimizer", "lr", "schedule", *(["milestones", "gamma"] if cfg.schedule == "step"
                                             else ["poly_power"]), "weight_decay", "clip"]
    parts = []
    for k in keys:
        v = getattr(cfg, k)
        if cfg.preset is not None and k in PRESETS.get(cfg.preset, {}).get("config", {}) \
                and PRESETS[cfg.preset]["config"][k] == v:
            src = f"preset {cfg.preset}"
        elif k in recipe and recipe[k][0] == v:
            src = recipe[k][1]
        elif k == "clip" and v == TrainConfig.clip:
            src = "ours: grdkit's default, no paper states clipping"
        else:
            src = "given"
        parts.append(f"{k} {v} ({src})")
    where = f"preset {cfg.preset}" if cfg.preset else f"{cfg.model}'s own recipe"
    return f"train: recipe: {where}: " + ", ".join(parts)


def apply_preset(cfg: TrainConfig, explicit: set[str] = frozenset()) -> TrainConfig:
    """``cfg`` with its preset's settings filled in, except the fields and model options named in
    ``explicit`` (what the user set by hand wins).

    Raises:
        InputError: an unknown preset, another model than the preset's, or a required option
            (local weights) that is missing.
    """
    if cfg.preset is None:
        return cfg
    p = PRESETS.get(cfg.preset)
    if p is None:
        raise InputError(None, f"unknown preset {cfg.preset!r}; choose from {sorted(PRESETS)}")
    if cfg.model != p["model"]:
        raise InputError(None, f"preset {cfg.preset} is for {p['model']}, not {cfg.model}")
    for k in p["required"]:
        if k not in explicit:
            raise InputError(None, f"preset {cfg.preset} needs {k} (a local path; nothing is "
                             "downloaded)")
    values = {k: v for k, v in p["config"].items() if k not in explicit}
    args = dict(cfg.model_args)
    args.update({k: v for k, v in p["model_args"].items() if k not in explicit})
    return TrainConfig(**{**{f.name: getattr(cfg, f.name) for f in fields(cfg)}, **values,
                          "model_args": args})


def resolve_defaults(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` with the model's inference defaults filled in where the config leaves them None."""
    if cfg.threshold is not None:
        return cfg
    return TrainConfig(**{**{f.name: getattr(cfg, f.name) for f in fields(cfg)},
                          "threshold": float(model_default(cfg.model, "default_threshold", 0.25))})


def build_model(cfg: TrainConfig, pretrained: bool = True) -> torch.nn.Module:
    """The model of a config. Without ``pretrained`` the checkpoint supplies every weight (and the
    input normalisation, a buffer of the vision encoder).

    Raises:
        InputError: the model cannot be built with these options (e.g. a backbone that does not
            take the image size), named with its options.
    """
    args = dict(cfg.model_args)
    if not pretrained:
        args["vision_weights"] = None
    args.update(model_options(cfg.model, {"image_size": cfg.size}))
    try:
        return model_class(cfg.model)(**args)
    except InputError:
        raise
    except (RuntimeError, ValueError, TypeError, AssertionError) as e:
        raise InputError(None, f"cannot build {cfg.model} with {cfg.model_args}: "
                         f"{str(e)[:300]}") from None


def trainable_state(model: torch.nn.Module) -> dict:
    """State dict without a frozen text encoder (it is rebuilt from its package or folder)."""
    sd = model.state_dict()
    if not getattr(model, "train_text", True):
        sd = {k: v for k, v in sd.items() if not k.startswith("text.model.")}
    return sd


def autocast(device: torch.device):
    """bf16 autocast on CUDA; a no-op context on CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def to_device(batch: dict, device: torch.device) -> dict:
    """Tensors of a batch moved to ``device`` (non-blocking from pinned memory)."""
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v
            for k, v in batch.items()}


def read_checkpoint(path: str | Path) -> dict:
    """A checkpoint written by training, read with ``weights_only=True`` (no code runs).

    Raises:
        InputError: unreadable, truncated, or not a grdkit checkpoint.
    """
    data = read_bytes(path, "checkpoint", limit=LIMITS["checkpoint"])  # checked opener
    try:
        ck = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, EOFError, ValueError, pickle.UnpicklingError) as e:
        raise InputError(path, f"cannot be read as a checkpoint: {str(e)[:200]}") from None
    if not isinstance(ck, dict) or "model" not in ck:
        raise InputError(path, "is not a grdkit checkpoint (no 'model')")
    check_tensor_storage(ck, path)
    return ck


def check_tensor_storage(obj, path: str | Path, where: str = "") -> None:
    """Every tensor in ``obj`` (nested dicts / lists) views no more than its real storage.

    ``weights_only`` loading builds a tensor from (storage, shape, stride) as the file states
    them: a 1 kB file can declare a 200000 x 200000 tensor of stride 0 over one element, and
    any later whole-tensor operation (the NaN check, ``load_state_dict``'s copy) would then
    allocate 160 GB. A tensor must be non-overlapping and dense, and ``numel x element size``
    at most its storage's bytes (issue 30, I).

    Raises:
        InputError: naming the tensor's key.
    """
    if isinstance(obj, torch.Tensor):
        need = obj.numel() * obj.element_size()
        try:
            have = obj.untyped_storage().nbytes()
        except (RuntimeError, NotImplementedError):  # sparse, nested, meta: no plain storage
            raise InputError(path, f"tensor {where or '(top)'} is not a dense tensor "
                             f"({obj.layout})", hint="use a checkpoint written by grdkit train"
                             ) from None
        shape, stride = obj.shape, obj.stride()
        reach = (obj.storage_offset() + sum((n - 1) * abs(st) for n, st in zip(shape, stride))
                 + 1) * obj.element_size() if obj.numel() else 0
        zero = any(st == 0 and n > 1 for n, st in zip(shape, stride))  # one element, many views
        if need > have or reach > have or zero:
            raise InputError(path, f"tensor {where or '(top)'} declares {tuple(obj.shape)} "
                             f"over {have} bytes of storage (overlapping or larger than its "
                             "data)", hint="use a checkpoint written by grdkit train")
    elif isinstance(obj, dict):
        for k, v in obj.items():
            check_tensor_storage(v, path, f"{where}.{k}" if where else str(k))
    elif isinstance(obj, (list, tuple)):
        for k, v in enumerate(obj):
            check_tensor_storage(v, path, f"{where}[{k}]")


def check_fits(model: torch.nn.Module, state: dict, path: str | Path) -> None:
    """Load ``state`` into ``model``; only a frozen text encoder may be missing from it.

    Raises:
        InputError: missing or unexpected parameters (named).
    """
    if not isinstance(state, dict):
        raise InputError(path, "is not a grdkit checkpoint ('model' is not a state dict)")
    bad = next((k for k, v in state.items() if isinstance(v, torch.Tensor)
                and v.is_floating_point() and not bool(torch.isfinite(v).all())), None)
    if bad is not None:  # issue 21: NaN weights would give "no target" everywhere, silently
        raise InputError(path, f"weight {bad!r} holds NaN or infinite values",
                         hint="use a checkpoint of a run that trained without diverging")
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except (RuntimeError, TypeError, ValueError) as e:  # shapes that do not fit the config
        raise InputError(path, f"does not fit the model of its config.json: "
                         f"{' '.join(str(e).split())[:300]}") from None
    missing = [k for k in missing if not k.startswith("text.model.")]
    if missing or unexpected:
        raise InputError(path, f"does not fit the model: missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]}")


def check_run_config(cfg: TrainConfig, path: str | Path) -> None:
    """The entries of a run's ``config.json`` that predict uses have usable values (issue 21).

    Raises:
        InputError: an unknown model, ``threshold`` not a number in [0, 1] (NaN included),
            ``size`` / ``group_size`` not positive integers, ``model_args`` not an object.
    """
    def bad(key: str, what: str):
        return InputError(path, f"{key} is {getattr(cfg, key)!r}; {what}",
                          hint="pass the run folder that training wrote")

    if cfg.model not in MODELS:
        raise bad("model", f"one of {sorted(MODELS)} is needed")
    t = cfg.threshold
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 <= t <= 1:
        raise bad("threshold", "a number in [0, 1] is needed")
    for key, low in (("size", 1), ("group_size", 1)):
        v = getattr(cfg, key)
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise bad(key, f"an integer >= {low} is needed")
    if not isinstance(cfg.model_args, dict):
        raise bad("model_args", "an object is needed")


def load_run(run_dir: str | Path, device: torch.device) -> tuple[torch.nn.Module, TrainConfig]:
    """Rebuild the model of a run folder from ``config.json`` and ``checkpoint.pt`` (weights and
    input normalisation exactly as saved).

    Raises:
        InputError: not a run folder, no checkpoint yet, or a checkpoint that does not fit.
    """
    run = Path(run_dir)
    if not (run / "config.json").is_file():
        raise InputError(run, "is not a run folder (no config.json)",
                         hint="pass the run folder that training wrote")
    raw = read_json(run / "config.json", "run config")
    known = {f.name for f in fields(TrainConfig)}
    if not isinstance(raw, dict) or "model" not in raw:
        raise InputError(run / "config.json", "is not a grdkit run config")
    cfg = resolve_defaults(TrainConfig(**{k: v for k, v in raw.items() if k in known}))
    check_run_config(cfg, run / "config.json")  # issue 21
    if not (run / "checkpoint.pt").exists():
        raise InputError(run, "has no checkpoint.pt yet")
    model = build_model(cfg, pretrained=False)
    ck = read_checkpoint(run / "checkpoint.pt")
    check_fits(model, ck["model"], run / "checkpoint.pt")
    return model.to(device).eval(), cfg
