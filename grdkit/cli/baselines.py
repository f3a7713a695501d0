"""``grdkit train``, ``grdkit predict`` and ``grdkit cache`` (need the ``grdkit[baselines]``
extra)."""

from __future__ import annotations

from pathlib import Path

import click

from ..baselines import MODELS
from ..baselines.options import apply_to_command
from ..io import check_outputs, ensure_writable
from .ui import Output, format_option, no_progress_option, out, progress_bar, split_file


def _model_args(values: tuple[str, ...]) -> dict:
    """``KEY=VALUE`` pairs; VALUE is parsed as JSON (numbers, booleans, lists), else a string."""
    import json

    out = {}
    for v in values:
        key, sep, raw = v.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{v!r} is not KEY=VALUE", param_hint="--model-arg")
        try:
            out[key.strip()] = json.loads(raw)
        except ValueError:
            out[key.strip()] = raw
    return out


@click.command("train")
@click.argument("model", type=click.Choice(sorted(MODELS)))
@click.option("--data", required=True, multiple=True,
              type=click.Path(exists=True, path_type=Path),
              help="Canonical split file (or built folder, with --split) to train on; repeat "
                   "it to train on the union of several (GRES §5.3: G-RefC + G-RefC+ + "
                   "G-RefCg), ids kept distinct; config.json records the sources.")
@click.option("--split", help="The split of each --data that is a built folder (e.g. train; "
                              "needed when a folder has several).")
@click.option("--img-root", required=True, type=click.Path(exists=True, file_okay=False,
                                                            path_type=Path),
              help="Image folder the split's file_name entries are relative to.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Run folder: config.json, checkpoint.pt, metrics.jsonl, TensorBoard events.")
@click.option("--epochs", type=click.IntRange(min=1), default=10, show_default=True,
              help="Epochs. One epoch = ceil(expressions x --repeats / --batch-size) optimiser "
                   "steps: each expression gives --repeats groups per epoch; the first log "
                   "line prints the count.")
@click.option("--batch-size", type=click.IntRange(min=1),
              help="Groups per optimiser step IN TOTAL, over all processes and accumulation "
                   "micro-steps (split as evenly as possible, losses weighted per group); "
                   "default: one per process and micro-step.")
@click.option("--accum-steps", type=click.IntRange(min=1), default=1, show_default=True,
              help="Gradient-accumulation micro-steps per optimiser step.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True),
              help="Learning rate (see --optimizer, --schedule); default: the model's recipe without --preset (LTS: Adam 1e-3, step x0.1 at epoch 30; GRSer: AdamW 5e-5, poly; MABP: AdamW 2e-5, poly), the preset's with one.")
@click.option("--group-size", type=click.IntRange(min=1), default=8, show_default=True,
              help="Images per group N (positives : negatives 1:1 where available).")
@click.option("--size", type=click.IntRange(min=32), default=416, show_default=True,
              help="Input size S (S x S pixels).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
              show_default=True, help="auto: CUDA when available, else CPU.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of the weights' initialisation and of the group sampling.")
@click.option("--repeats", type=click.IntRange(min=1), default=1, show_default=True,
              help="Groups sampled per expression (or ref, see --epoch-unit) per epoch (an epoch's "
                   "steps scale with it).")
@click.option("--epoch-unit", type=click.Choice(["sentence", "ref"]), default="sentence",
              show_default=True,
              help="What an epoch counts: every sentence (expression) once, or every ref once "
                   "with one of its sentences drawn per seed and epoch (official MABP loader; "
                   "the mabp-paper preset).")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its checkpoint.")
@click.option("--max-steps", type=click.IntRange(min=0),
              help="Stop after this many optimiser steps, whatever --epochs (0: save the "
                   "untrained model); default: no limit.")
@click.option("--vision", default="efficientnet_lite0", show_default=True,
              help="timm model name of the visual encoder.")
@click.option("--vision-weights", default="bundled", show_default=True,
              help="'bundled' (EfficientNet-Lite0 from its package) or a local state dict.")
@click.option("--text", default="all-MiniLM-L6-v2", show_default=True,
              help="'all-MiniLM-L6-v2' (bundled), a local transformers folder, or a local "
                   "GloVe file PATH.txt (GloVe + 1024-d bi-GRU, LTS §3.1).")
@click.option("--text-gru", is_flag=True, help="Bi-GRU over the token states (LTS).")
@click.option("--train-text", is_flag=True, help="Fine-tune the text encoder (default frozen).")
@click.option("--freeze-vision", is_flag=True, help="Keep the visual backbone fixed.")
@click.option("--width", type=click.IntRange(min=8),
              help="Channels of the fused maps (default: LTS 256, GRSer C_v = 512).")
@click.option("--d-k", type=click.IntRange(min=8), default=1024, show_default=True,
              help="LTS relevance-filter dimension (eq. 8).")
@click.option("--no-tqm", is_flag=True, help="GRSer ablation: no Triphasic Query Module.")
@click.option("--no-hierarchizer", is_flag=True,
              help="GRSer ablation 'w/o HMapHier' (Table 5 = Table 4 row 1): a random heatmap "
                   "order at training and test, the same as --rank random.")
@click.option("--no-mirror", is_flag=True, help="GRSer ablation: no mirror training.")
@click.option("--no-triplet", is_flag=True, help="GRSer ablation: no triplet loss / decision.")
@click.option("--rank", type=click.Choice(["pos+neg", "pos", "neg", "random", "margin"]),
              default="pos+neg", show_default=True,
              help="GRSer heatmap ranking criterion at training (eq. 4, Table 4; margin = "
                   "ascending s_pos - s_neg is ours, not the paper's); grdkit predict --rank "
                   "may choose another one at test.")
@click.option("--pool", type=click.Choice(["mean", "mask"]), default="mean", show_default=True,
              help="GRSer eq. 2 pooling: mean (divide by H*W, §3.2) or mask (by sum |M|).")
@click.option("--anchor", type=click.Choice(["prototype", "mean", "z"]), default="prototype",
              show_default=True,
              help="GRSer triplet anchor: prototype (eq. 2 pooling of z_n's V-part, the space "
                   "eq. 4 ranks in), mean (plain mean of V_n) or z (grdkit's old pooled conv).")
@click.option("--fusion", type=click.Choice(["paper", "text-every-level", "visual", "none",
                                              "pwam"]),
              help="LTS: paper (eq. 5-7 literally; default), text-every-level, or visual (eq. 5 "
                   "without the text factor: LTS Table 2's rows without the fusion). GRSer: none "
                   "(default) or pwam (LAVT pixel-word attention on the encoder features).")
@click.option("--margin", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="GRSer triplet margin m (§3.4).")
@click.option("--mirror-weight", type=click.FloatRange(min=0), default=0.5, show_default=True,
              help="GRSer mirror-loss weight lambda (not published; grdkit's choice).")
@click.option("--threshold", type=click.FloatRange(0, 1),
              help="Mask threshold, saved with the run (default: the model's; LTS's 0.25 for "
                   "LTS and GRSer, which publishes none).")
@click.option("--clip", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="Gradient-norm clipping (not in either paper; 0 disables; gres-paper: 0).")
@click.option("--optimizer", type=click.Choice(["adamw", "adam"]),
              help="AdamW (GRES) or Adam (LTS §4.1); default: the model's recipe without --preset (LTS: Adam 1e-3, step x0.1 at epoch 30; GRSer: AdamW 5e-5, poly; MABP: AdamW 2e-5, poly), the preset's with one.")
@click.option("--schedule", type=click.Choice(["poly", "step"]),
              help="poly: polynomial decay (power 0.9); step: x --gamma at each --milestone "
                   "epoch; default: the model's recipe without --preset (LTS: Adam 1e-3, step x0.1 at epoch 30; GRSer: AdamW 5e-5, poly; MABP: AdamW 2e-5, poly), the preset's with one.")
@click.option("--milestone", "milestones", type=click.IntRange(min=1), multiple=True,
              help="Epoch at which the step schedule multiplies the lr by --gamma; repeatable; "
                   "default: the model's recipe (LTS: 30).")
@click.option("--gamma", type=click.FloatRange(min=0, min_open=True),
              help="Step-schedule factor; default: the model's recipe (0.1).")
@click.option("--max-words", type=click.IntRange(min=1),
              help="Words (GloVe) or tokens (transformer) per expression at most (LTS §4.1: "
                   "15, 20 for RefCOCOg); default 20 / 32.")
@click.option("--preset", type=click.Choice(["gres-paper", "lts-paper", "mabp-paper"]),
              help="Fill in a paper's stated settings (options given explicitly win). "
                   "gres-paper and mabp-paper need --vision-weights (Swin-B state dict) and "
                   "--text (bert-base-uncased folder); lts-paper needs --vision-weights "
                   "(timm darknet53 state dict) and --text (glove.*.txt).")
@click.option("--val-split", help="The split of --val-data when it is a built folder (e.g. "
                                  "val).")
@click.option("--val-data", type=click.Path(exists=True, path_type=Path),
              help="A split evaluated after every epoch with the code of grdkit predict; its "
                   "metrics are logged under 'val' in metrics.jsonl.")
@click.option("--workers", type=click.IntRange(min=0), default=2, show_default=True,
              help="DataLoader worker processes.")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Where the resized image store lives (default $GRDKIT_CACHE or "
                   "~/.cache/grdkit); built on first use, see grdkit cache.")
@click.option("--channels-last", is_flag=True, help="channels_last memory format (CUDA).")
@click.option("--compile", "compile_", is_flag=True, help="torch.compile the model.")
@click.option("--model-arg", "model_arg", multiple=True, metavar="KEY=VALUE",
              help="Any other option of the model's constructor (VALUE read as JSON, else as a "
                   "string), e.g. --model-arg heads=8 for MABP; repeatable.")
@click.option("--log-every", type=click.IntRange(min=1), default=20, show_default=True,
              help="Optimiser steps between training log lines (mean loss and terms since the "
                   "previous line, lr, images/s, data time, peak memory, ETA); in one process "
                   "also at least one line every 60 s.")
@click.option("--log-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Folder of the TensorBoard event files (losses, lr, validation metrics and "
                   "overlays); default: the run folder --out.")
@click.option("--no-tensorboard", is_flag=True, help="Write no TensorBoard event files.")
@no_progress_option
@format_option
@click.pass_context
def train_cmd(ctx, model, data, split, img_root, out_dir, epochs, batch_size, accum_steps, lr,
              group_size, size, device, seed, repeats, epoch_unit, resume, max_steps, vision,
              vision_weights, text, text_gru, train_text, freeze_vision, width, d_k, no_tqm,
              no_hierarchizer, no_mirror, no_triplet, rank, pool, anchor, fusion, margin,
              mirror_weight, threshold, clip, optimizer, schedule, milestones, gamma, max_words,
              preset, val_split, val_data, workers, cache_dir, channels_last, compile_, model_arg,
              log_every, log_dir, no_tensorboard, no_progress, output_format):
    """Train a baseline on a canonical dataset; CPU or CUDA (bf16).

    Without --preset each model trains with its own paper's optimiser and schedule (LTS: Adam
    + step; GRSer: AdamW + poly; MABP: AdamW); the first log lines name the recipe, the
    source of each value, and how many steps an epoch has. Every --log-every steps a line
    gives the mean loss and its terms, lr, images/s, data time, peak memory and ETA; the same
    records go to metrics.jsonl and TensorBoard (--log-dir).

    Several GPUs or nodes: launch with torchrun, e.g.
    torchrun --nproc_per_node 4 -m grdkit.cli.main train lts ...
    (only rank 0 prints and writes the run folder).
    """
    from ..baselines import model_options, require_torch

    require_torch()
    # issue 21: outputs checked before the work, not after it
    check_outputs([*data, img_root, val_data], folders={"--out": out_dir, "--log-dir": log_dir})
    data = tuple(split_file(d, split) for d in data)
    if val_data is not None:
        val_data = split_file(val_data, val_split, "--val-split")
    ensure_writable(out_dir, "--out")
    from ..baselines.engine import train
    from ..baselines.run import TrainConfig, apply_preset, apply_recipe

    if no_hierarchizer:  # Table 4 row 1: random order at training and test
        if ctx.get_parameter_source("rank") != click.core.ParameterSource.DEFAULT \
                and rank != "random":
            raise click.BadParameter(f"--no-hierarchizer is --rank random, not {rank}",
                                     param_hint="--rank")
        rank = "random"
    options = {"vision": vision, "vision_weights": vision_weights, "text": text,
               "text_gru": text_gru, "train_text": train_text, "freeze_vision": freeze_vision,
               "d_k": d_k, "group_size": group_size, "tqm": not no_tqm,
               "mirror": not no_mirror, "triplet": not no_triplet, "rank": rank, "seed": seed,
               "margin": margin, "mirror_weight": mirror_weight, "pool": pool,
               "anchor": anchor}
    if width is not None:
        options["width"] = width
    if fusion is not None:
        options["fusion"] = fusion
    if max_words is not None:
        options["max_words"] = max_words
    args = model_options(model, options)  # each model takes the options its constructor names
    extra = _model_args(model_arg)
    unknown = sorted(set(extra) - set(model_options(model, dict.fromkeys(extra))))
    if unknown:
        raise click.BadParameter(f"{model} takes no option {', '.join(unknown)}",
                                 param_hint="--model-arg")
    args.update(extra)
    given = {"lr": lr, "optimizer": optimizer, "schedule": schedule,
             "milestones": list(milestones) or None, "gamma": gamma}
    cfg = TrainConfig(model=model, epochs=epochs, batch_size=batch_size,
                      group_size=group_size, size=size, seed=seed, device=device,
                      repeats=repeats, epoch_unit=epoch_unit, max_steps=max_steps,
                      threshold=threshold, clip=clip,
                      workers=workers, channels_last=channels_last, compile=compile_,
                      preset=preset, model_args=args, accum_steps=accum_steps,
                      log_every=log_every, **{k: v for k, v in given.items() if v is not None})
    explicit = {k for k in ctx.params
                if ctx.get_parameter_source(k) != click.core.ParameterSource.DEFAULT}
    explicit |= {k for k, v in given.items() if v is not None}
    # without a preset each model's own optimiser and schedule (run.RECIPES); the engine's
    # first log line names them and their sources (run.describe_recipe)
    cfg = apply_recipe(cfg, explicit) if preset is None else apply_preset(cfg, explicit)
    tb = None if no_tensorboard else (log_dir or out_dir)
    with progress_bar(not no_progress) as track:
        res = train(cfg, list(data), img_root, out_dir, resume=resume, progress=track,
                    val_data=val_data, cache_dir=cache_dir, log_dir=tb)
    if res["rank"] != 0:
        return
    row = {"steps": res["steps"],
           "epoch loss": None if res["epoch_loss"] is None else round(res["epoch_loss"], 4),
           "seconds": round(res["seconds"], 1), "device": res["device"],
           "processes": res["world_size"], "in sync": res["ranks_in_sync"]}
    if res["val"]:
        row.update({f"val {k}": round(res["val"][k], 2) for k in ("gres_miou", "t_acc", "n_acc")
                    if res["val"].get(k) is not None})
    o = Output(output_format)
    o.table(f"trained {model} -> {out_dir} (epoch loss: the last epoch's mean)", [row])
    o.emit(row)


apply_to_command(train_cmd)  # option types from the one schema (grdkit.baselines.options)


@click.command("predict")
@click.option("--checkpoint", "run_dir", required=True,
              type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Run folder written by grdkit train.")
@click.option("--data", required=True, type=click.Path(exists=True, path_type=Path),
              help="Canonical split file (or built folder, with --split) to predict on.")
@click.option("--split", help="With a built folder --data: the split (needed when it has "
                              "several).")
@click.option("--img-root", required=True, type=click.Path(exists=True, file_okay=False,
                                                            path_type=Path),
              help="Image folder the split's file_name entries are relative to.")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="preds.json for grdkit eval.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
              show_default=True, help="auto: CUDA when available, else CPU.")
@click.option("--min-pixels", type=click.IntRange(min=1),
              help="Masks with fewer pixels are 'no target' (null); default: the model's "
                   "(1; MABP without its no-target branch, nt_depth=0: 50).")
@click.option("--threshold", type=click.FloatRange(0, 1),
              help="Mask threshold on the probability (0-1); default: the run's.")
@click.option("--workers", type=click.IntRange(min=0), default=2, show_default=True,
              help="DataLoader worker processes decoding images.")
@click.option("--rank", type=click.Choice(["pos+neg", "pos", "neg", "random", "margin"]),
              help="GRSer: the heatmap ranking criterion at test (GRES Table 4's Test column); "
                   "default: the one the run trained with.")
@click.option("--group-size", type=click.IntRange(min=1),
              help="Images per inference chunk N (default: the run's; Table 6). GRSer keeps "
                   "the best-ranked heatmaps when N exceeds its trained N.")
@no_progress_option
def predict_cmd(run_dir, data, split, img_root, out_path, device, min_pixels, threshold, workers,
                rank, group_size, no_progress):
    """Predict masks for every (expression, image) pair and write preds.json."""
    from ..baselines import require_torch

    require_torch()
    check_outputs([run_dir, data, img_root], {"--out": out_path})  # issue 21
    data = split_file(data, split)
    ensure_writable(out_path.parent, "--out's folder")
    from ..baselines.predict import predict, write_predictions

    with progress_bar(not no_progress) as track:
        preds = predict(run_dir, data, img_root, device, min_pixels, threshold, track, workers,
                        rank=rank, group_size=group_size)
    write_predictions(preds, out_path)
    n_pos = sum(not p["no_target"] if "no_target" in p else p["segmentation"] is not None
                for p in preds)
    out.print(f"Wrote {out_path}: {len(preds)} pairs, {n_pos} predicted targeted, "
              f"{len(preds) - n_pos} no-target")
    if any("peak" in p for p in preds):  # LTS §4.3, against the data's ground truth
        from ..evaluators.localisation import peak_accuracy
        from ..format import load_dataset

        loc = peak_accuracy(preds, load_dataset(data), out_path)
        if loc and loc["loc_pairs"]:
            out.print(f"Localisation accuracy (heatmap peak inside the ground truth, LTS §4.3): "
                      f"{loc['loc_acc']:.2f}% of {loc['loc_pairs']} targeted pairs")


apply_to_command(predict_cmd)


@click.command("cache")
@click.option("--data", required=True, type=click.Path(exists=True, path_type=Path),
              help="Canonical split file (or built folder, with --split) whose images and "
                   "positive masks are stored.")
@click.option("--split", help="With a built folder --data: the split (needed when it has "
                              "several).")
@click.option("--img-root", required=True, type=click.Path(exists=True, file_okay=False,
                                                            path_type=Path),
              help="Image folder the split's file_name entries are relative to.")
@click.option("--size", type=click.IntRange(min=32), default=416, show_default=True,
              help="S: images resized to S x S (as grdkit train --size).")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Parent folder (default $GRDKIT_CACHE or ~/.cache/grdkit).")
@no_progress_option
def cache_cmd(data, split, img_root, size, cache_dir, no_progress):
    """Pre-resize every image and mask once into a memory-mapped uint8 store.

    Training reads it from every DataLoader worker and every rank (and builds it on first use
    when it is missing). The store is keyed by the dataset's content, the image root and S.
    """
    from ..baselines import require_torch

    require_torch()
    from ..baselines.data import build_store
    from ..format import load_dataset

    with progress_bar(not no_progress) as track:
        store = build_store(load_dataset(split_file(data, split)), img_root, size, cache_dir,
                            track)
    nbytes = sum(f.stat().st_size for f in store.folder.iterdir())
    out.print(f"Store {store.folder}: {len(store.image_row)} images, {len(store.mask_row)} "
              f"masks at {size} px, {nbytes / 2**20:.1f} MiB")


apply_to_command(cache_cmd)
