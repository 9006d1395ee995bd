"""The learning-rate range test (Smith 2017, "Cyclical Learning Rates for Training
Neural Networks", section 3.3; popularized by fastai's ``lr_find``).

A fresh copy of the run's model trains for a few hundred steps while the
learning rate grows exponentially from ``start_lr`` to ``end_lr``; the loss
is recorded after every step.  At tiny rates nothing happens, then the loss
falls, then it blows up.  The sweep stops once the smoothed loss exceeds four
times its best value.

The suggestion is the rate where the smoothed loss falls fastest: the most
negative slope of the smoothed loss against log10(learning rate), looked for
between the end of the smoothing warm-up and the loss minimum.  (The other
common rule, a tenth of the rate at the minimum, is reported beside it.)

    python train.py find-lr --model resnet20 --dataset cifar10 --optimizer sgd

writes ``<runs-dir>/lr_finder/<run name>/lr_finder.png`` (and ``.csv``,
``.json``) and prints the ``train.py`` command to run next.  No run directory
is created or touched, and nothing is exported.
"""

from __future__ import annotations

import csv
import math
import os
import sys

import numpy as np

from core.errors import UserError
from training import config as config_module
from training import rundir

STOP_FACTOR = 4.0


def smooth(losses, beta: float) -> np.ndarray:
    """Exponential moving average with bias correction (as in Adam), so early values are not pulled to 0."""
    out, average = [], 0.0
    for i, loss in enumerate(losses, start=1):
        average = beta * average + (1 - beta) * loss
        out.append(average / (1 - beta ** i))
    return np.array(out)


def suggest(lrs, smoothed, skip: int) -> int:
    """Index of the steepest descent of ``smoothed`` against log10(lr), before its minimum."""
    lrs, smoothed = np.asarray(lrs), np.asarray(smoothed)
    lowest = int(np.argmin(smoothed))
    if lowest - skip < 2:
        raise UserError("The loss did not fall during the learning-rate sweep; lower --start-lr or raise --steps")
    slope = np.gradient(smoothed, np.log10(lrs))
    return skip + int(np.argmin(slope[skip:lowest]))


def find_lr(config: dict, folder: str, *, start_lr: float = 1e-7, end_lr: float = 10.0, steps: int = 200,
            beta: float = 0.9, log=print) -> dict:
    """Runs the sweep for ``config`` (a training configuration) prepared in ``folder``; returns the curve
    and the suggestion.  For a transfer run the sweep drives the head phase, as ``--lr`` does."""
    if not 0 < start_lr < end_lr:
        raise UserError(f"The sweep needs 0 < --start-lr < --end-lr, got {start_lr:g} and {end_lr:g}")
    if steps < 20:
        raise UserError(f"--steps must be at least 20 for a readable curve, got {steps}")
    from training import run as training_run  # here, so that find-lr --help starts no TensorFlow

    prepared = training_run.prepare({**config, "schedule": "constant"}, log=lambda *_: None, run_dir=folder)
    phase = prepared.phases[0]  # the first phase: the whole zoo model, or a transfer run's head
    phase.prepare(prepared.model)
    model = phase.fit_model or prepared.model
    # The run's own optimizer and loss, at a constant rate that the sweep then sets step by step.
    training_run.compile_model(model, prepared.config, 1, lr=start_lr)
    batches = iter((phase.datasets or (prepared.train_ds,))[0].repeat())

    factor = (end_lr / start_lr) ** (1 / (steps - 1))
    lrs, losses, best, stopped, average = [], [], math.inf, False, 0.0
    for step in range(steps):
        lr = start_lr * factor ** step
        model.optimizer.learning_rate = lr
        x, y = next(batches)
        loss = float(np.asarray(model.train_on_batch(x, y)).reshape(-1)[0])
        if not math.isfinite(loss):
            stopped = True
            break
        lrs.append(lr)
        losses.append(loss)
        average = beta * average + (1 - beta) * loss  # the running form of smooth()
        current = average / (1 - beta ** len(losses))
        best = min(best, current)
        if step > steps // 10 and current > STOP_FACTOR * best:
            stopped = True
            break
    if len(losses) < 10:
        raise UserError(f"The loss blew up within {len(losses)} steps of the sweep; lower --start-lr")
    smoothed = smooth(losses, beta)
    skip = max(1, len(losses) // 10)
    index = suggest(lrs, smoothed, skip)
    lowest = int(np.argmin(smoothed))
    return {"lrs": lrs, "losses": losses, "smoothed": smoothed.tolist(), "suggestion": float(lrs[index]),
            "suggestion_index": index, "min_loss_lr": float(lrs[lowest]), "min_loss_lr_over_10": lrs[lowest] / 10,
            "stopped_early": stopped, "steps_run": len(losses), "rule": "steepest descent of the smoothed loss"}


def plot(result: dict, path: str, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.semilogx(result["lrs"], result["losses"], color="0.75", lw=1, label="loss per step")
    ax.semilogx(result["lrs"], result["smoothed"], color="tab:blue", lw=2, label="smoothed")
    i = result["suggestion_index"]
    ax.axvline(result["suggestion"], color="tab:red", ls="--")
    ax.plot([result["suggestion"]], [result["smoothed"][i]], "o", color="tab:red",
            label=f"suggested --lr {result['suggestion']:.2g} (steepest descent)")
    low = min(result["smoothed"])
    ax.set_ylim(min(result["losses"]) * 0.95, max(result["smoothed"][0], low) * 1.6 + 1e-9)
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("training loss")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    ax.set_title(title or "learning-rate range test")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write(result: dict, folder: str, title: str = "") -> dict:
    """lr_finder.png, lr_finder.csv and lr_finder.json in ``folder``."""

    os.makedirs(folder, exist_ok=True)
    paths = {kind: os.path.join(folder, f"lr_finder.{kind}") for kind in ("png", "csv", "json")}
    plot(result, paths["png"], title)
    with open(paths["csv"], "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["step", "lr", "loss", "smoothed_loss"])
        writer.writerows(zip(range(len(result["lrs"])), result["lrs"], result["losses"], result["smoothed"]))
    rundir.write_json(paths["json"], {k: v for k, v in result.items() if k not in ("lrs", "losses", "smoothed")})
    return paths


def next_command(argv: list[str], lr: float) -> str:
    """The ``train.py`` command line of ``argv`` without the sweep's own flags, at learning rate ``lr``."""
    drop_with_value = {"--steps", "--start-lr", "--end-lr", "--lr"}
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if name in drop_with_value:
            skip = "=" not in arg
            continue
        kept.append(arg)
    return " ".join(["python train.py", *kept, "--lr", f"{lr:.2g}"])


def build_parser():
    """``train.py find-lr``: the training flags and a Learning-rate finder group."""
    parser = config_module.build_parser()
    parser.prog = "train.py find-lr"
    parser.description = ("Learning-rate range test: sweep the rate exponentially over --steps training steps of "
                          "a fresh model, plot loss against rate and suggest a --lr.")
    group = parser.add_argument_group("Learning-rate finder")
    group.add_argument("--steps", type=int, default=200, help="training steps of the sweep")
    group.add_argument("--start-lr", type=float, default=1e-7, help="first learning rate")
    group.add_argument("--end-lr", type=float, default=10.0, help="last learning rate")
    return parser


def main(argv) -> int:
    parser = build_parser()
    config, args = config_module.resolve_config(argv, parser)
    name = config["run_name"] or config_module.default_run_name(config)
    folder = os.path.join(config["runs_dir"], "lr_finder", name)
    result = find_lr(config, folder, start_lr=args.start_lr, end_lr=args.end_lr, steps=args.steps)
    paths = write(result, folder, title=f"{config_module.model_label(config)} on {config['dataset']}: learning-rate range test")
    stop = " (stopped early: the loss blew up)" if result["stopped_early"] else ""
    print(f"Swept {result['steps_run']} steps from {args.start_lr:g} to {result['lrs'][-1]:.3g}{stop}")
    print(f"Suggested --lr {result['suggestion']:.2g} (steepest descent of the smoothed loss); "
          f"the loss was lowest at {result['min_loss_lr']:.2g} (a tenth of that: {result['min_loss_lr_over_10']:.2g})")
    print(f"Wrote {paths['png']}")
    print(f"next: {next_command(list(argv), result['suggestion'])}")
    sys.stdout.flush()
    return 0
