"""A plain-language verdict on a run's learning curves, with the numbers behind it.

The loop people learn (Ng's "bias/variance" recipe, Karpathy's "recipe for
training neural networks") is: look at the training and validation curves,
name the regime, change one thing.  ``diagnose`` names the regime from the
rows of ``history.csv`` and says which of ``train.py``'s flags act on it.

The checks run in this order; the first that holds is the verdict:

1. ``too_short``: fewer than ``MIN_EPOCHS`` epochs; no trend can be read.
   A non-finite loss is ``diverging`` next, before any other check.
2. ``batchnorm_statistics``: the run measured its validation accuracy with
   batch norm's moving averages and with each batch's own statistics
   (``training.callbacks.PreciseBatchNorm``), kept the moving averages
   (``--no-precise-bn``), and the batch statistics score at least ``BN_GAP``
   higher.  Then validation is scored with statistics that do not belong to
   the weights (Wu & Johnson 2021), not with an over-fitted network, and the
   curves below would be misread: validation loss rising while training loss
   falls looks like over-fitting.
3. ``diverging``: a non-finite loss; training loss at the end above its first
   epoch; training loss jumping up by more than half from one epoch to the
   next at least twice (oscillation); or, when the class count is known, a
   first epoch far above chance-level loss (ln K) ending at chance accuracy.
4. ``overfitting``: validation loss ``RISE`` above its minimum, the minimum at
   least two epochs before the end, while training loss kept falling.
5. ``underfitting``: training loss still falling at the end (the last fifth
   of epochs took off more than ``STILL_FALLING`` of the whole run's drop)
   while validation loss is still at its best, or training and validation
   accuracy both below ``LOW_TRAIN_ACCURACY``.
6. ``needs_more_data``: training accuracy at least ``MEMORIZED`` (the
   training set is learned by heart), validation loss flat over the last third
   of epochs, and validation accuracy at least ``GAP`` below training accuracy.
7. ``overfitting``: the same accuracy gap of at least ``LARGE_GAP`` without
   the training set being memorized.
8. ``good_fit``: none of the above.

Thresholds are module constants so they can be read (and argued with).
"""

from __future__ import annotations

import dataclasses
import math

MIN_EPOCHS = 3
RISE = 0.05  # validation loss this far (relative) above its minimum counts as rising
STILL_FALLING = 0.05
LOW_TRAIN_ACCURACY = 0.8
MEMORIZED = 0.99
GAP = 0.03
LARGE_GAP = 0.10
JUMP = 0.5
BN_GAP = 0.2  # validation accuracy with batch statistics this far above the moving averages' names batch norm

VERDICTS = ("underfitting", "overfitting", "needs_more_data", "diverging", "good_fit", "too_short",
            "batchnorm_statistics")

HEADLINES = {
    "underfitting": "under-fitting: the model has not learned the training set yet",
    "overfitting": "over-fitting: the model learns the training set at the expense of new images",
    "needs_more_data": "the training set is memorized and validation has stopped improving: more data would help most",
    "diverging": "diverging: the learning rate is too high for this model",
    "good_fit": "a good fit: training and validation agree and have settled",
    "too_short": "too few epochs to read a trend",
    "batchnorm_statistics": "batch norm's moving statistics do not match the trained weights, so validation "
                            "scores low though the network learned: rerun with --precise-bn",
}

ADVICE = {
    "underfitting": [
        "train longer: raise --epochs (with --patience 0 or a larger --patience)",
        "a higher --lr (try `python train.py find-lr ...`), or --schedule onecycle",
        "more capacity: a bigger --model, or --width 2",
        "less regularization: lower --dropout, --l2, --weight-decay or --label-smoothing, or a lighter --augment",
    ],
    "overfitting": [
        "more data, or more augmentation: --augment standard (or strong)",
        "more regularization: --dropout 0.3-0.5, --l2 1e-4, --weight-decay 5e-4, --label-smoothing 0.1",
        "early stopping keeps the best epoch: --patience 5 (with --monitor val_loss)",
        "a smaller --model or --width 0.5",
    ],
    "needs_more_data": [
        "collect more labelled images: the cheapest gain now",
        "until then, synthesize variety: --augment standard or strong (mixup/cutmix: e.g. 'standard+mixup')",
        "or start from a pretrained network: --backbone mobilenet_v2 (transfer learning)",
        "--label-smoothing 0.1 and --dropout keep the model from becoming over-confident",
    ],
    "diverging": [
        "lower --lr by 10x (or run `python train.py find-lr ...` for a value)",
        "warm up: --schedule cosine --warmup-epochs 2, or --schedule onecycle",
        "--batch-norm steadies deep models; --optimizer adam is forgiving of the rate",
    ],
    "good_fit": [
        "to gain more: a bigger --model or --width with --augment standard; `python train.py compare` shows which",
        "average a few runs with different --seed: `python train.py ensemble saved_models/A saved_models/B`",
    ],
    "too_short": ["train for at least 3 epochs (--epochs) to get a diagnosis"],
    "batchnorm_statistics": [
        "--precise-bn (the default where batch norm trains) re-estimates the statistics on clean training "
        "batches before each validation and the export",
        "this run's export carries the moving averages too: retrain rather than serve it",
        "read the curves again after that: until then validation loss rises for the statistics' sake",
    ],
}


def _series(history, key):
    values = [row.get(key) for row in history]
    return values if all(v is not None for v in values) else None


def _fmt(x):
    return f"{x:.4g}"


def diagnose(history: list[dict], *, num_classes: int | None = None, batch_norm: dict | None = None) -> dict:
    """Names the regime of a run from its per-epoch history.

    Args:
        history: rows as ``training.rundir.read_history`` returns them (epoch,
            loss, accuracy, val_loss, val_accuracy, ...).
        num_classes: K, for the chance-level loss ln K and accuracy 1/K.
        batch_norm: the run's measurement of batch norm's statistics on
            validation (``metrics.json``'s "batch_norm"), or None.

    Returns:
        ``{"verdict": one of VERDICTS, "headline": str, "evidence": [str],
        "advice": [str]}``; evidence lines quote the curves' numbers.
    """
    verdict, evidence = _verdict(history, num_classes, batch_norm)
    return {"verdict": verdict, "headline": HEADLINES[verdict], "evidence": evidence, "advice": ADVICE[verdict]}


@dataclasses.dataclass
class _Curves:
    n: int
    loss: list
    acc: list | None
    val_loss: list | None
    val_acc: list | None
    num_classes: int | None


def _verdict(history, num_classes, batch_norm=None):
    n = len(history)
    loss = _series(history, "loss")
    if n < MIN_EPOCHS or loss is None:
        return "too_short", [f"{n} epoch(s) recorded; a diagnosis needs at least {MIN_EPOCHS}"]
    bad = [row["epoch"] + 1 for row in history
           if not all(math.isfinite(row.get(k, 0.0)) for k in ("loss", "val_loss"))]
    if bad:
        return "diverging", [f"the loss is not finite at epoch(s) {', '.join(map(str, bad[:5]))}"]
    curves = _Curves(n, loss, _series(history, "accuracy"), _series(history, "val_loss"),
                     _series(history, "val_accuracy"), num_classes)
    found = _batchnorm_statistics(curves, batch_norm)
    if found:
        return found
    for check in (_diverging, _overfitting, _underfitting):
        found = check(curves)
        if found:
            return found
    return _settled(curves)


def _batchnorm_statistics(c: _Curves, measured: dict | None):
    """2. Batch norm's moving averages, not the network, keep validation low."""
    if not measured or measured.get("precise_bn"):
        return None
    scores = measured["val_accuracy"]
    moving, batch = scores["moving_average"], scores["batch_statistics"]
    if batch - moving < BN_GAP:
        return None
    chance = f", chance being {1 / c.num_classes:.3f}" if c.num_classes else ""
    trained = f"training accuracy {c.acc[-1]:.3f}, " if c.acc is not None else ""
    furthest = measured.get("variance_ratio")
    return "batchnorm_statistics", [
        f"validation accuracy at epoch {measured['epoch']}: {moving:.3f} with batch norm's moving averages{chance}",
        f"{batch:.3f} with each batch normalized by its own statistics, {scores['reestimated']:.3f} with "
        "statistics re-estimated on clean training batches (what --precise-bn keeps)",
        *([f"the moving variance of {furthest['layer']} is {_fmt(furthest['moving_over_reestimated'])}x the "
           "re-estimated one (median over its channels)"] if furthest else []),
        f"{trained}training loss {_fmt(c.loss[-1])}: the network learned; its moving statistics did not follow"]


def _diverging(c: _Curves):
    """2. Divergence: the training loss itself misbehaves."""
    loss, n = c.loss, c.n
    if loss[-1] > loss[0]:
        return "diverging", [f"training loss rose from {_fmt(loss[0])} (epoch 1) to {_fmt(loss[-1])} "
                             f"(epoch {n})"]
    scale = 0.02 * loss[0]
    jumps = [(i + 1, loss[i - 1], loss[i]) for i in range(1, n)
             if loss[i] > (1 + JUMP) * loss[i - 1] and loss[i] - loss[i - 1] > scale]
    if len(jumps) >= 2:
        shown = "; ".join(f"epoch {e}: {_fmt(a)} -> {_fmt(b)}" for e, a, b in jumps[:3])
        return "diverging", [f"training loss jumped up by more than {JUMP:.0%} in {len(jumps)} epochs ({shown})"]
    if c.num_classes and c.num_classes > 1 and c.acc is not None:
        chance_loss, chance_acc = math.log(c.num_classes), 1.0 / c.num_classes
        if loss[0] > 3 * chance_loss and c.acc[-1] < 2 * chance_acc:
            return "diverging", [
                f"the first epoch's training loss was {_fmt(loss[0])}, far above the {_fmt(chance_loss)} "
                f"(ln {c.num_classes}) of an untrained classifier",
                f"training accuracy ended at {c.acc[-1]:.3f}, chance level being {chance_acc:.3f}"]
    return None


def _overfitting(c: _Curves):
    """3. Over-fitting: validation loss turned up while training loss kept falling."""
    loss, val_loss, n = c.loss, c.val_loss, c.n
    if val_loss is None:
        return None
    best = min(range(n), key=val_loss.__getitem__)
    if best <= n - 3 and val_loss[-1] > (1 + RISE) * val_loss[best] and loss[-1] < loss[best]:
        return "overfitting", [
            f"validation loss rose {val_loss[-1] / val_loss[best] - 1:.0%} from its minimum "
            f"{_fmt(val_loss[best])} (epoch {best + 1}) to {_fmt(val_loss[-1])} (epoch {n})",
            f"while training loss fell from {_fmt(loss[best])} to {_fmt(loss[-1])}"]
    return None


def _underfitting(c: _Curves):
    """4. Under-fitting: training has not finished learning, or cannot."""
    loss, val_loss, acc, val_acc, n = c.loss, c.val_loss, c.acc, c.val_acc, c.n
    window = max(1, n // 5)
    drop_total = loss[0] - min(loss)
    drop_recent = loss[-1 - window] - loss[-1]
    val_still_best = val_loss is None or min(range(n), key=val_loss.__getitem__) >= n - 1 - window
    if drop_total > 0 and drop_recent > STILL_FALLING * drop_total and val_still_best:
        return "underfitting", [
            f"training loss is still falling: {_fmt(loss[-1 - window])} -> {_fmt(loss[-1])} over the last "
            f"{window} epoch(s), {drop_recent / drop_total:.0%} of the run's whole drop",
            *([f"validation loss is at its lowest in the last epochs ({_fmt(min(val_loss))})"] if val_loss else [])]
    # Mixup, cutmix or strong augmentation lower the training accuracy on their own; only low
    # accuracy on the validation images too says the model cannot fit.
    if acc is not None and acc[-1] < LOW_TRAIN_ACCURACY and (val_acc is None or val_acc[-1] < LOW_TRAIN_ACCURACY):
        return "underfitting", [f"training accuracy is only {acc[-1]:.3f} after {n} epochs "
                                f"(training loss {_fmt(loss[-1])})",
                                *([f"validation accuracy {val_acc[-1]:.3f}"] if val_acc else [])]
    return None


def _settled(c: _Curves):
    """5-6. Training has settled: memorized with validation flat, a large gap, or a good fit."""
    loss, val_loss, acc, val_acc, n = c.loss, c.val_loss, c.acc, c.val_acc, c.n
    if acc is None or val_acc is None:
        return "good_fit", ["no accuracy curves recorded; training loss has settled"]
    gap = acc[-1] - val_acc[-1]
    # 5. Memorized training set, validation flat: the classic "collect more data".
    if acc[-1] >= MEMORIZED and gap >= GAP and val_loss is not None:
        third = max(2, n // 3)
        start = val_loss[-third]
        if val_loss[-1] > (1 - 2 * STILL_FALLING) * start:
            return "needs_more_data", [
                f"training accuracy {acc[-1]:.3f} (training loss {_fmt(loss[-1])}): the training set is learned",
                f"validation loss flat over the last {third} epochs: {_fmt(start)} -> {_fmt(val_loss[-1])}",
                f"validation accuracy {val_acc[-1]:.3f}, {gap:.3f} below training"]
    # 6. A large gap without memorization.
    if gap >= LARGE_GAP:
        return "overfitting", [f"training accuracy {acc[-1]:.3f} vs. validation {val_acc[-1]:.3f}: "
                               f"a gap of {gap:.3f}"]
    return "good_fit", [
        f"training accuracy {acc[-1]:.3f}, validation {val_acc[-1]:.3f} (gap {gap:.3f})",
        *([f"validation loss {_fmt(val_loss[-1])}, its minimum {_fmt(min(val_loss))}"] if val_loss else [])]


def summary(diagnosis: dict) -> list[str]:
    """Lines for the terminal: the verdict, its evidence, what to try."""
    lines = [f"Diagnosis: {diagnosis['headline']}"]
    lines += [f"  evidence: {line}" for line in diagnosis["evidence"]]
    lines += [f"  try: {line}" for line in diagnosis["advice"]]
    return lines
