"""``--time-budget MINUTES``: as many epochs as fit the minutes given, the schedule sized to them.

Budgeted training (Li et al., ICLR 2020) asks "how good can it get in the
time I have?": a schedule that decays to its end exactly when the time runs
out beats a longer schedule cut short.  So before the first epoch the run
times a few real training steps (through ``fit``) and validation steps on its own model and data
(``measure``), sizes the number of epochs to the minutes left
(``plan_epochs``), and the schedule, built for that many epochs, ends when
the time does.  The probe's steps are undone: the weights are put back.

The plan is written to ``budget.json`` in the run directory, so a resumed run
keeps the same epochs (and the same schedule) instead of measuring again; the
seconds each epoch took are added there too.  ``Deadline`` stops a run at the
end of an epoch when another would not fit the budget, so the budget is a
limit even where the first steps were faster than the rest.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time

import keras

from training import rundir

PLAN = "budget.json"
TIMED_STEPS = 5  # the training steps timed are the difference between fits of 5 and 15 steps
# (the validation steps timed: 5 after 2, one by one)
WARMUP_STEPS = 2
SAVES_PER_EPOCH = 2  # the best weights and the resumable checkpoint, both written every epoch


def read_plan(run_dir: str) -> dict | None:
    try:
        with open(os.path.join(run_dir, PLAN), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def plan_epochs(run, phase, minutes: float, compile_for_probe) -> dict:
    """The plan for a one-phase run of ``minutes``: epochs, measured seconds per epoch; read back on a resume."""
    plan = read_plan(run.run_dir) if run.resuming else None
    if plan is not None and plan.get("minutes") == minutes:
        return plan
    train_ds, val_ds = phase.datasets or (run.train_ds, run.val_ds)
    measured = measure(phase.fit_model or run.model, train_ds, val_ds, run.steps * phase.passes,
                       compile_for_probe)
    left = minutes * 60 - (time.time() - run.started)  # the probe, features and measuring count against it
    epochs = max(1, int(left // measured["epoch_seconds"]))
    plan = {"minutes": minutes, "epochs": epochs, **measured, "spent_seconds": 0.0}
    rundir.write_json(os.path.join(run.run_dir, PLAN), plan)
    return plan


def measure(model, train_ds, val_ds, steps: int, compile_for_probe) -> dict:
    """Seconds of one epoch of ``steps`` training steps and a pass over ``val_ds``, from timed steps of the
    run's own model and data.

    ``compile_for_probe(model)`` compiles ``model`` the way the run will.  The
    weights are restored afterwards, so the probe's steps leave no trace.
    """
    weights = model.get_weights()
    compile_for_probe(model)
    train_step = _fit_step(model, train_ds)
    val_step = _median_step(lambda x, y: model.test_on_batch(x, y), val_ds)
    save = _save_seconds(model)
    model.set_weights(weights)
    val_steps = max(0, int(val_ds.cardinality()))  # unknown (-2) or infinite (-1) cannot happen here
    epoch = steps * train_step + val_steps * val_step + SAVES_PER_EPOCH * save
    return {"train_step_seconds": round(train_step, 5), "val_step_seconds": round(val_step, 5),
            "save_seconds": round(save, 4), "epoch_seconds": round(epoch, 4)}


def _fit_step(model, dataset) -> float:
    """Seconds of one training step as ``fit`` takes it: the slope between a short and a longer ``fit``.

    Timed through ``fit`` itself, input pipeline and callbacks' per-step work
    included, because that is what the run will pay; ``train_on_batch`` steps
    timed one by one were up to several times faster than ``fit``'s on the
    same model.  The slope leaves out what one ``fit`` call costs whatever
    its length (building its iterator, tracing)."""
    batches = dataset.repeat()  # a small folder has fewer batches than the probe takes
    model.fit(batches.take(WARMUP_STEPS), epochs=1, verbose=0)  # traces the training step
    seconds = {}
    for steps in (TIMED_STEPS, 3 * TIMED_STEPS):
        started = time.perf_counter()
        model.fit(batches.take(steps), epochs=1, verbose=0)
        seconds[steps] = time.perf_counter() - started
    slope = (seconds[3 * TIMED_STEPS] - seconds[TIMED_STEPS]) / (2 * TIMED_STEPS)
    # On a busy machine the longer fit can come out no slower than the short one; then the longer fit's
    # average, fixed cost included, is the estimate (a zero would plan epochs without end).
    return slope if slope > 0 else seconds[3 * TIMED_STEPS] / (3 * TIMED_STEPS)


def _median_step(step, dataset) -> float:
    """Median seconds of ``step(x, y)`` over batches of ``dataset``, reading each batch included."""
    times = []
    while len(times) < WARMUP_STEPS + TIMED_STEPS:
        started = time.perf_counter()
        for x, y in dataset:
            step(x, y)
            now = time.perf_counter()
            times.append(now - started)
            started = now
            if len(times) >= WARMUP_STEPS + TIMED_STEPS:
                break
        if not times:
            return 0.0  # an empty dataset
    return statistics.median(times[WARMUP_STEPS:] or times)


def _save_seconds(model) -> float:
    """Seconds to write the model's weights once (every epoch writes them for the best model and the backup)."""
    with tempfile.TemporaryDirectory(prefix="budget-") as folder:
        started = time.perf_counter()
        model.save_weights(os.path.join(folder, "probe.weights.h5"))
        return time.perf_counter() - started


def scale(plan: dict) -> float:
    """The schedule's clock scale for ``plan``: planned epochs / epochs now expected (1 before any epoch)."""
    return plan["epochs"] / plan.get("total_epochs", plan["epochs"])


def most_epochs(planned: int) -> int:
    """The most epochs a budgeted run may take, when its epochs turn out faster than the probe said."""
    return 2 * planned + 5


class Deadline(keras.callbacks.Callback):
    """Re-plans a budgeted run after every epoch, and stops it when the time is up.

    After each epoch the epochs still to come are the budget left over the
    median epoch so far (every epoch's own overhead, validation and saving,
    included), and the schedule's clock is rescaled so that it ends with the
    last of them (``training.optim.Stretched``).  When no further epoch fits,
    training stops there.  ``budget.json`` records the seconds spent and the
    epochs expected, so a resumed run goes on with both.

    Args:
        run_dir: where ``budget.json`` is.
        plan: the run's plan (``plan_epochs``).
        scale: the variable the schedule's clock is scaled by.
        started: when this session's training started (``time.time()``).
        most: the phase's epoch limit.
    """

    def __init__(self, run_dir: str, plan: dict, scale, started: float, *, most: int, clock=time.time):
        super().__init__()
        self.run_dir, self.plan, self.scale = run_dir, dict(plan), scale
        self.budget, self.started, self.most, self.clock = plan["minutes"] * 60, started, most, clock
        self.spent_before = float(plan.get("spent_seconds") or 0.0)
        self.epoch_started = None
        self.epoch_seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_started = self.clock()

    def on_epoch_end(self, epoch, logs=None):
        now = self.clock()
        self.epoch_seconds.append(now - self.epoch_started)
        spent = self.spent_before + now - self.started
        done = epoch + 1
        per_epoch = statistics.median(self.epoch_seconds)
        total = min(self.most, done + max(0, int((self.budget - spent) // per_epoch)))
        self.plan.update(spent_seconds=round(spent, 2), total_epochs=max(total, done))
        if total > done:
            self.scale.assign(scale(self.plan))
        else:
            self.model.stop_training = True
        rundir.write_json(os.path.join(self.run_dir, PLAN), self.plan)
