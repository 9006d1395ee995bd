"""Search spaces: which training settings a search varies, and over what values.

A space maps configuration keys (the names of ``training.run.DEFAULTS``, i.e.
the flags of ``train.py``) to a ``Param``.  ``declare`` turns it into
keras-tuner hyperparameters whose defaults are the run's own settings, and
``to_config`` turns one trial's values back into a configuration dict, so
every trial is an ordinary training run.

Specs on the command line (``--tune KEY=SPEC``) or in a JSON space file:

============================  ===========================================
``lenet5,resnet20``           one of these values (``true``, ``false``,
                              ``none``, numbers and JSON lists parse)
``1e-4..1e-2/log``            a float range sampled log-uniformly
``0..0.5/0.1``                a range in steps of 0.1 (ints stay ints)
``0.2``                       one value: the key is fixed
============================  ===========================================
"""

from __future__ import annotations

import dataclasses
import json
import math

from core.errors import UserError
from training.config import DEFAULTS


@dataclasses.dataclass
class Param:
    """One searched setting: a choice of values, or a numeric range."""

    values: list | None = None  # a choice (one value: fixed)
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False

    @property
    def is_range(self) -> bool:
        return self.values is None

    def describe(self) -> str:
        if not self.is_range:
            return ", ".join(_show(v) for v in self.values)
        extra = "/log" if self.log else (f"/{_show(self.step)}" if self.step else "")
        return f"{_show(self.low)}..{_show(self.high)}{extra}"


def choice(*values) -> Param:
    return Param(values=list(values))


def log_range(low, high) -> Param:
    return Param(low=low, high=high, log=True)


def _show(value) -> str:
    if value is None:
        return "default"  # the model's or optimizer's own default
    return json.dumps(value) if not isinstance(value, str) else value


# What a zoo search varies by default: architecture and depth, regularization, optimizer and its schedule.
# "None" keeps each model's own default (its paper's batch norm, dropout and activation).
ZOO_SPACE = {
    "model": choice("lenet5", "lenet5_modern", "resnet20", "resnet32", "inception_small"),
    "width": choice(None, 0.5, 2.0),
    "batch_norm": choice(None, True, False),
    "dropout": choice(None, 0.0, 0.25, 0.5),
    "activation": choice(None, "relu", "elu", "swish"),
    "optimizer": choice("adam", "sgd", "adamw"),
    "lr": log_range(1e-4, 3e-2),
    "schedule": choice("cosine", "constant", "onecycle", "step"),
    "weight_decay": choice(None, 1e-5, 1e-4, 5e-4),
    "augment": choice("none", "light", "standard"),
    "label_smoothing": choice(0.1, 0.0, 0.2),
}

# What a transfer search varies: how much of the backbone trains, the head, and both phases' rates.
TRANSFER_SPACE = {
    "freeze": choice("from:auto", "fraction:0.1", "fraction:0.3", "fraction:0.6", "none"),
    "head_hidden": choice([], [128], [256]),
    "head_dropout": choice(0.2, 0.0, 0.5),
    "lr": log_range(1e-4, 1e-2),
    "finetune_lr": log_range(1e-5, 1e-3),
    "discriminative_lr": choice(None, 0.1, 0.01),
}

# "none": only what --tune names is searched.
SPACES = {"zoo": ZOO_SPACE, "transfer": TRANSFER_SPACE, "none": {}}


def parse_value(text: str):
    """``true``/``false``/``none``, a number, JSON, or else the string itself."""
    lowered = text.strip().lower()
    if lowered in ("none", "null"):
        return None
    if lowered in ("true", "false"):
        return lowered == "true"
    try:
        return json.loads(text)
    except ValueError:
        return text.strip()


def parse_spec(key: str, spec) -> Param:
    """A ``Param`` from a command-line spec string or a JSON space-file value."""
    if isinstance(spec, list):
        return Param(values=list(spec)) if spec else _bad(key, spec, "an empty list")
    if not isinstance(spec, str):
        return Param(values=[spec])
    if ".." in spec and not spec.lstrip().startswith("["):
        low_text, _, rest = spec.partition("..")
        high_text, _, modifier = rest.partition("/")
        try:
            low, high = json.loads(low_text), json.loads(high_text)
        except ValueError:
            return _bad(key, spec, "the ends of a range must be numbers")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)) or low >= high:
            return _bad(key, spec, "a range needs two numbers, low < high")
        if modifier == "log":
            if low <= 0:
                return _bad(key, spec, "a log range must be above 0")
            return Param(low=low, high=high, log=True)
        step = None
        if modifier:
            try:
                step = json.loads(modifier)
            except ValueError:
                return _bad(key, spec, f"{modifier!r} is neither 'log' nor a step")
        return Param(low=low, high=high, step=step)
    try:
        values = json.loads(f"[{spec}]")  # "0.1,0.2", "[],[128]", '"a","b"'
    except ValueError:
        values = [parse_value(part) for part in spec.split(",")]
    return Param(values=values)


def _bad(key, spec, why):
    raise UserError(f"--tune {key}={spec}: {why} (forms: a,b,c | LOW..HIGH | LOW..HIGH/log | LOW..HIGH/STEP | VALUE)")


def build_space(kind: str, base: dict, *, tune: dict[str, Param], fixed: set[str]) -> dict[str, Param]:
    """The space a search explores: the kind's defaults, minus the keys the user
    fixed with their own flags, with ``tune``'s keys narrowed or added."""

    if kind not in SPACES:
        raise UserError(f"Unknown search space {kind!r} (valid: {', '.join(SPACES)})")
    unknown = sorted(set(tune) - set(DEFAULTS))
    if unknown:
        raise UserError(f"--tune: unknown setting {', '.join(unknown)}; settings are train.py's flags with "
                        f"underscores, e.g. lr, model, dropout, head_dropout")
    space = {}
    for key, param in SPACES[kind].items():
        if key in fixed:
            continue
        if not param.is_range and base.get(key) not in param.values:
            param = Param(values=[base.get(key), *param.values])  # the unsearched setting is always a candidate
        space[key] = param
    space.update(tune)
    for key, param in space.items():
        if param.is_range and not isinstance(base.get(key, 0), (int, float, type(None))):
            raise UserError(f"--tune {key}: a range needs a numeric setting, {key} is {base[key]!r}")
    return space


def default_of(param: Param, base_value):
    """A trial-0 value: the run's own setting when the space holds it."""
    if param.is_range:
        if isinstance(base_value, (int, float)) and param.low <= base_value <= param.high:
            return base_value
        return math.sqrt(param.low * param.high) if param.log else param.low
    return base_value if base_value in param.values else param.values[0]


def declare(hp, space: dict[str, Param], base: dict) -> None:
    """Declares each searched setting on a keras-tuner ``HyperParameters``.

    Choices travel as JSON strings, so None, booleans and lists can be values;
    ranges are keras-tuner Int or Float.  Every default is the run's own
    setting, which makes trial 0 the unsearched configuration.
    """
    for key, param in space.items():
        default = default_of(param, base.get(key))
        if not param.is_range:
            encoded = list(dict.fromkeys(json.dumps(v) for v in param.values))
            hp.Choice(key, encoded, default=json.dumps(default))
        elif all(isinstance(v, int) for v in (param.low, param.high)) and not param.log and \
                (param.step is None or isinstance(param.step, int)):
            hp.Int(key, param.low, param.high, step=param.step or 1, default=int(default))
        else:
            hp.Float(key, float(param.low), float(param.high), step=param.step,
                     sampling="log" if param.log else "linear", default=float(default))


def to_config(values: dict, base: dict) -> dict:
    """A trial's configuration: ``base`` with the trial's values decoded (tuner/ keys dropped)."""
    config = dict(base)
    for key, value in values.items():
        if key.startswith("tuner/"):
            continue
        config[key] = json.loads(value) if isinstance(value, str) else value
    return config


def decoded(values: dict) -> dict:
    """A trial's values as the settings they stand for, for tables and logs."""
    return {k: (json.loads(v) if isinstance(v, str) else v) for k, v in values.items() if not k.startswith("tuner/")}
