"""One typed, range-checked schema of a training run's options (issue 30, class E).

``grdkit train``'s options, a recipe's ``train`` / ``train_options`` values and ``grdkit
reproduce --set`` all go through :data:`RUN_OPTIONS`: the CLI takes each option's click type from
here (:func:`apply_to_command`), and :func:`check_run_option` checks a value that did not come
through click (a YAML or JSON value) with the same type and range, strictly: a list where a number
is expected, a boolean for an integer, NaN or an infinity for a float, a string that merely parses
as a number are refused, with the option and where it was given named. click's own types are used
(a well-kept library does the conversion); the strictness is added because click converts
leniently (``int(True)``, ``float("nan")`` pass).
"""

from __future__ import annotations

import math
from typing import Any

import click

from ..errors import InputError

DEVICES = ("auto", "cpu", "cuda")
PRESET_NAMES = ("gres-paper", "lts-paper", "mabp-paper")
RANKS = ("pos+neg", "pos", "neg", "random", "margin")

# option -> click type: TrainConfig fields, then model-constructor options the CLI names.
# Units: size, width, d_k in pixels / channels; lr, weight_decay, gamma per optimiser step.
RUN_OPTIONS: dict[str, click.ParamType] = {
    "epochs": click.IntRange(min=1),
    "batch_size": click.IntRange(min=1),
    "accum_steps": click.IntRange(min=1),
    "lr": click.FloatRange(min=0, min_open=True),
    "weight_decay": click.FloatRange(min=0),
    "poly_power": click.FloatRange(min=0),
    "clip": click.FloatRange(min=0),
    "group_size": click.IntRange(min=1),
    "size": click.IntRange(min=32, max=4096),
    "repeats": click.IntRange(min=1),
    "seed": click.IntRange(min=0),
    "device": click.Choice(DEVICES),
    "threshold": click.FloatRange(0, 1),
    "log_every": click.IntRange(min=1),
    "max_steps": click.IntRange(min=0),
    "workers": click.IntRange(min=0),
    "channels_last": click.BOOL,
    "compile": click.BOOL,
    "optimizer": click.Choice(["adamw", "adam"]),
    "schedule": click.Choice(["poly", "step"]),
    "milestones": click.IntRange(min=1),  # a list of them
    "gamma": click.FloatRange(min=0, min_open=True),
    "preset": click.Choice(PRESET_NAMES),
    # model options
    "vision": click.STRING,
    "vision_weights": click.STRING,
    "text": click.STRING,
    "text_gru": click.BOOL,
    "train_text": click.BOOL,
    "freeze_vision": click.BOOL,
    "width": click.IntRange(min=8),
    "d_k": click.IntRange(min=8),
    "tqm": click.BOOL,
    "mirror": click.BOOL,
    "triplet": click.BOOL,
    "rank": click.Choice(RANKS),
    "pool": click.Choice(["mean", "mask"]),
    "anchor": click.Choice(["prototype", "mean", "z"]),
    "fusion": click.Choice(["paper", "text-every-level", "visual", "none", "pwam"]),
    "margin": click.FloatRange(min=0),
    "mirror_weight": click.FloatRange(min=0),
    "max_words": click.IntRange(min=1),
    # prediction options (grdkit predict, a recipe's predict / predict_options)
    "min_pixels": click.IntRange(min=1),
}
LISTS = frozenset({"milestones"})  # options whose value is a list of the type
NULLABLE = frozenset({"batch_size", "threshold", "max_steps", "preset", "width", "fusion",
                      "max_words", "min_pixels"})  # None means "the default"


def _scalar(key: str, v: Any, t: click.ParamType, where: str) -> Any:
    def bad(need: str) -> InputError:
        shown = repr(v) if len(repr(v)) <= 80 else repr(v)[:77] + "..."
        return InputError(where, f"option {key} is {shown}; {need} is needed",
                          hint=f"give {key} as grdkit train --{key.replace('_', '-')} takes it")

    if isinstance(t, click.types.BoolParamType):
        if not isinstance(v, bool):
            raise bad("true or false")
        return v
    if isinstance(t, click.IntRange):
        if isinstance(v, bool) or not isinstance(v, int):
            raise bad(f"an integer {_range(t)}".rstrip())
    elif isinstance(t, click.FloatRange):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise bad(f"a finite number {_range(t)}".rstrip())
    elif isinstance(t, click.Choice):
        if not isinstance(v, str) or v not in t.choices:
            raise bad(f"one of {', '.join(t.choices)}")
        return v
    elif not isinstance(v, str) or not v:
        raise bad("a non-empty string")
    try:
        t.convert(v, None, None)  # the range check; the value is kept as given (1 stays an
        return v                  # int: step keys of reproduce hash the config as written)
    except click.BadParameter:
        kind = "an integer" if isinstance(t, click.IntRange) else "a finite number"
        raise bad(f"{kind} {_range(t)}") from None


def _range(t: click.ParamType) -> str:
    lo, hi = getattr(t, "min", None), getattr(t, "max", None)
    parts = []
    if lo is not None:
        parts.append(f"{'>' if getattr(t, 'min_open', False) else '>='} {lo}")
    if hi is not None:
        parts.append(f"{'<' if getattr(t, 'max_open', False) else '<='} {hi}")
    return " and ".join(parts)


def _plain(key: str, v: Any, where: str, depth: int = 0) -> Any:
    """An option the schema does not name (a model option given through --model-arg / --set):
    JSON-like scalars (finite numbers) or flat lists of them."""
    if v is None or isinstance(v, (bool, str, int)):
        return v
    if isinstance(v, float):
        if not math.isfinite(v):
            raise InputError(where, f"option {key} is {v!r}; a finite number is needed")
        return v
    if isinstance(v, list) and depth == 0 and len(v) <= 64:
        return [_plain(key, x, where, 1) for x in v]
    raise InputError(where, f"option {key} is a {type(v).__name__}; a number, a string, true, "
                     "false or a short list of them is needed")


def check_run_option(key: str, value: Any, where: str) -> Any:
    """``value`` of run option ``key`` checked against :data:`RUN_OPTIONS` (module header).

    Args:
        key: the option (a TrainConfig field or a model option, ``_`` spelling).
        value: a parsed YAML / JSON value.
        where: the file or flag named in messages (``"--set"``, ``"recipes/lts/table6.yaml"``).

    Returns:
        The value, unchanged (checked by the option's click type).

    Raises:
        InputError: a wrong type, out of range, not finite, or not one of the choices.
    """
    if not isinstance(key, str):
        raise InputError(where, f"option name {key!r} is not a string")
    t = RUN_OPTIONS.get(key)
    if t is None:
        return _plain(key, value, where)
    if value is None and key in NULLABLE:
        return None
    if key in LISTS:
        if not isinstance(value, list) or len(value) > 1000:
            raise InputError(where, f"option {key} must be a list of integers {_range(t)}")
        return [_scalar(key, v, t, where) for v in value]
    return _scalar(key, value, t, where)


def check_run_options(options: Any, where: str) -> dict:
    """Every entry of a mapping of run options checked (:func:`check_run_option`).

    Raises:
        InputError: not a mapping with string keys, or a bad value (named).
    """
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise InputError(where, f"run options must be a mapping, not {type(options).__name__}")
    return {k: check_run_option(k, v, where) for k, v in options.items()}


def apply_to_command(command: click.Command) -> None:
    """Give every option of ``command`` that :data:`RUN_OPTIONS` names its type from there (the
    one schema; the CLI's declarations keep only names, defaults and help)."""
    for p in command.params:
        if isinstance(p, click.Option) and p.name in RUN_OPTIONS and not p.is_flag:
            p.type = RUN_OPTIONS[p.name]
