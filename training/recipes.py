"""What differs between kinds of run, in one object each: a zoo network, or transfer from a backbone.

A recipe builds the model, plans the phases, says what each phase trains,
and has the last word on what is kept.  ``training.run`` asks the recipe and
never branches on the kind of run itself.

* ``ZooRecipe``: a zoo network from scratch, one phase.
* ``TransferRecipe``: LP-FT on a backbone (``transfer.finetune``): a linear
  probe starts the head, the head trains with the backbone frozen (on cached
  features when nothing augments), then optional fine-tuning of the top; a
  network that ends below the probe on validation gives way to it.
"""

from __future__ import annotations

import keras
import numpy as np

import transfer
import zoo
from core.errors import UserError
from core.model import assemble, network_of, preprocessing_layer
from core.rows import predict
from core.whiten import whiten_first_convolution
from training.config import MODEL_OPTIONS, transfers
from training.phases import Phase, passes_for, validation_ranks
from training.pipeline import make_pipeline


def load_backbone(config: dict):
    """The transfer backbone named by --backbone (None for a zoo run)."""
    if not config["backbone"]:
        return None
    weights = None if str(config["weights"]).lower() == "none" else config["weights"]
    shape = (*config["image_size"], config["channels"] or 3) if config["image_size"] else None
    try:
        return transfer.load_backbone(config["backbone"], input_shape=shape, weights=weights)
    except ValueError as error:
        raise UserError(str(error)) from None


class ZooRecipe:
    """A zoo network trained from scratch in one phase."""

    backbone = None

    def __init__(self, config: dict):
        try:
            self.variant = zoo.get(config["model"])  # an unknown name fails before any data is read
        except ValueError as error:
            raise UserError(str(error)) from None

    whitened = None  # what --whiten set (core.whiten), for the summary

    def describe(self) -> str:
        described = f"{self.variant.name} ({self.variant.paper})"
        if self.whitened:
            w = self.whitened
            described += (f"; {w['layer']} starts as whitening: {w['whitened']} of its {w['filters']} filters from "
                          f"patches of {w['patch']} values (--whiten)")
        return described

    def build(self, config: dict, data, augmentation=None):
        options = {key: config[key] for key in MODEL_OPTIONS}
        try:
            network = zoo.build(config["model"], input_shape=data.input_shape, num_classes=data.num_classes,
                                **options)
            preprocessing = preprocessing_layer(config["preprocessing"], data.arrays["train"][0])
            if config["whiten"]:  # a resumed run loads its own weights over these
                self.whitened = whiten_first_convolution(network, data.arrays["train"][0], preprocess=preprocessing,
                                                         seed=config["seed"])
        except ValueError as error:
            raise UserError(str(error)) from None
        return assemble(network, data.input_shape, preprocessing=preprocessing, augmentation=augmentation)

    def start(self, run) -> None:
        """Nothing to do before the first step."""

    def phases(self, run, augmented: bool) -> list[Phase]:
        return [Phase("train", run.config["epochs"], run.config["lr"])]

    def before_phase(self, run, phase) -> dict | None:
        """Learning-rate multipliers for the phase (None: one rate)."""
        return None

    def finish(self, run, inference, test_probabilities=None) -> dict | None:
        """What metrics.json records about the choice of the kept model (None: nothing to choose)."""
        return None


class TransferRecipe:
    """LP-FT on a backbone: the probe, the head, then optional fine-tuning (``transfer.finetune``)."""

    def __init__(self, config: dict):
        self.backbone = load_backbone(config)
        self.start_state = None  # the transfer.ProbeStart
        self.probe_weights = None  # the whole model as it started: the pretrained backbone with the probe head

    def describe(self) -> str:
        shape = "x".join(map(str, self.backbone.input_shape))
        return f"backbone {self.backbone.name} (input {shape}) with a new head"

    def build(self, config: dict, data, augmentation=None):
        network = transfer.classifier_network(self.backbone, data.num_classes, dropout=config["head_dropout"],
                                              hidden=tuple(config["head_hidden"] or ()))
        return assemble(network, data.input_shape, preprocessing=self.backbone.preprocessing,
                        augmentation=augmentation)

    def head(self, run):
        return network_of(run.model).get_layer("head")

    def start(self, run) -> None:
        """LP-FT's first half: the linear probe, fitted on the frozen features, becomes the head's start."""
        config = run.config
        self.start_state = transfer.start_from_probe(
            self.backbone, self.head(run), run.data.arrays, run.data.num_classes, fit_on_val=config["fit_on_val"],
            score_test=not run.trial, class_weight="balanced" if config["class_weight"] == "balanced" else None)
        self.probe_weights = run.model.get_weights()
        run.log(f"Linear probe (logistic regression on the frozen features): validation accuracy "
                f"{self.start_state.accuracy('val'):.4f}; the head starts from it")

    def phases(self, run, augmented: bool) -> list[Phase]:
        config = run.config
        head = Phase("head", config["epochs"], config["lr"],
                     prepare=lambda _: transfer.freeze(self.backbone.features, "all"))
        if config["feature_cache"] and not augmented:
            # Fast path: a frozen backbone without augmentation sees the same images every epoch,
            # so its features (computed once, for the probe) are all the head needs.
            head.fit_model, head.datasets = self.head(run), self._cached_datasets(run)
        plan = [head]
        if config["finetune_epochs"]:
            lr = config["finetune_lr"] or config["lr"] * transfer.FINETUNE_FACTOR
            # A few validation images cannot rank fine-tuning's epochs; its schedule decays to zero, so its
            # last epoch is its result, and the probe floor (``finish``) still guards the kept model.
            plan.append(Phase("finetune", config["finetune_epochs"], lr, prepare=self._unfreeze(config),
                              warmup_epochs=transfer.FINETUNE_WARMUP * config["finetune_epochs"],
                              keep_last=not validation_ranks(run.data.arrays["val"][1])))
        for phase in plan:
            phase.passes = passes_for(phase.epochs, run.steps, config["min_phase_steps"])
        return plan

    def _cached_datasets(self, run):
        config, data, cached = run.config, run.data, self.start_state.features
        return (make_pipeline(cached["train"], data.arrays["train"][1], data.num_classes,
                              batch_size=config["batch_size"], shuffle=True, seed=config["seed"], cast=False),
                make_pipeline(cached["val"], data.arrays["val"][1], data.num_classes, batch_size=256,
                              shuffle=False, seed=0, cast=False))

    def _unfreeze(self, config: dict):
        def unfreeze(_):
            try:
                transfer.unfreeze_top(self.backbone, config["freeze"])
            except ValueError as error:
                raise UserError(f"--freeze {config['freeze']!r}: {error}; or drop --finetune-epochs") from None
        return unfreeze

    def before_phase(self, run, phase) -> dict | None:
        run.log(f"Phase {phase.name!r}: {transfer.describe_freeze(run.model)}")
        lowest = run.config["discriminative_lr"]
        if phase.name != "finetune" or not lowest:
            return None
        multipliers = transfer.discriminative_multipliers(self.backbone, lowest)
        factors = sorted(set(multipliers.values()))
        if factors:
            run.log(f"  discriminative rates: {len(factors)} backbone groups at {factors[0]:.3g}-"
                    f"{factors[-1]:.3g} x {phase.lr:g}, head at {phase.lr:g}")
        return multipliers

    def finish(self, run, inference, test_probabilities=None) -> dict:
        """LP-FT's floor: the network is kept only if it is not below the probe on validation.

        Returns what ``metrics.json`` records under "probe": both validation scores,
        both test scores and which was kept.  ``test_probabilities``: the network's
        on the test split when the caller already has them (not predicted again).
        """
        start, smoothing = self.start_state, run.config["label_smoothing"]
        network = {split: _scores(inference, *run.data.arrays[split], probabilities=given, label_smoothing=smoothing,
                                  batch_size=run.config["batch_size"])
                   for split, given in (("val", None), ("test", test_probabilities))}
        probe_loss = start.loss("val", smoothing)
        kept = transfer.choose(network["val"], (start.accuracy("val"), probe_loss),
                               ties_by_loss=validation_ranks(run.data.arrays["val"][1]))
        run.log(f"Validation accuracy: network {network['val'][0]:.4f}, linear probe {start.accuracy('val'):.4f} "
                f"(cross-entropy {network['val'][1]:.4f} and {probe_loss:.4f})")
        if kept == "probe":
            run.log("The trained network ends below the linear probe on validation: keeping the probe instead "
                    "(the pretrained backbone with the probe as its head)")
            run.model.set_weights(self.probe_weights)
        return {**start.summary(), "network_val_accuracy": network["val"][0], "network_val_loss": network["val"][1],
                "val_loss": probe_loss, "network_test_accuracy": network["test"][0], "kept": kept,
                "head_start": start.how}


def _scores(model, images, labels, probabilities=None, label_smoothing=0.0, batch_size: int = 64) -> tuple:
    """(accuracy, cross-entropy against targets smoothed by ``label_smoothing``) of ``model`` on raw images
    (or of its ``probabilities`` for them); (None, None) for none.

    In batches of the run's ``--batch-size``, as the features were computed: a large backbone's activations
    grow with the batch (a MobileNetV2 transfer run on 6,000 photos at 128x128 peaked at 2,156 MB in batches
    of 256, 1,667 MB in 64)."""
    if not len(labels):
        return None, None
    if probabilities is None:
        probabilities = predict(model, images, batch_size)
    return (float(np.mean(probabilities.argmax(-1) == labels)),
            transfer.cross_entropy(probabilities, labels, label_smoothing))


class ScratchRecipe(ZooRecipe):
    """A named backbone with ``--weights none``: its architecture trained from scratch in one phase.

    With random weights there is nothing to transfer.  Frozen, a random
    MobileNetV2's or EfficientNet's pooled features collapse to about 1e-12
    and 1e-6 for every image (their batch norm in inference mode), and a head
    on them stays at chance.  So the whole network trains, batch norm in
    training mode, like any zoo model, under a new head.
    """

    def __init__(self, config: dict, log=print):
        self.backbone = load_backbone(config)
        ignored = [flag for flag, key, default in (("--freeze", "freeze", "from:auto"),
                                                    ("--finetune-epochs", "finetune_epochs", 0),
                                                    ("--finetune-lr", "finetune_lr", None),
                                                    ("--discriminative-lr", "discriminative_lr", None))
                   if config[key] != default]
        if ignored:
            log(f"Note: --weights none leaves nothing to transfer, so {self.backbone.name} trains from scratch, "
                f"whole and in one phase; {', '.join(ignored)} do not apply")

    def describe(self) -> str:
        return f"{self.backbone.name} from scratch (random weights) with a new head"

    # Its batch norm keeps Keras' momentum (0.999 in MobileNetV2), and --precise-bn (on by default here)
    # replaces the moving averages before every validation and the export (training.callbacks.PreciseBatchNorm).
    # A smaller momentum was not enough: at 0.9, the 56 steps of 8 epochs on 210 digits left 0.9^56 = 0.3% of
    # the initial variance 1.0 in the averages, seven times the 4e-4 of MobileNetV2's last depthwise layers, and
    # validation stayed at chance (0.100) while training reached 1.000.
    def build(self, config: dict, data, augmentation=None):
        inputs = keras.Input(shape=tuple(self.backbone.input_shape), name="preprocessed")
        head = transfer.head_model(self.backbone.feature_shape, data.num_classes, dropout=config["head_dropout"],
                                   hidden=tuple(config["head_hidden"] or ()))
        network = keras.Model(inputs, head(self.backbone.features(inputs)), name=f"{self.backbone.name}_scratch")
        return assemble(network, data.input_shape, preprocessing=self.backbone.preprocessing,
                        augmentation=augmentation)


def make_recipe(config: dict, log=print):
    """The recipe for ``config``: transfer from a --backbone, that backbone's architecture from scratch
    (``--weights none``), or a zoo model."""
    if not config["backbone"]:
        return ZooRecipe(config)
    if config["whiten"]:
        raise UserError("--whiten starts a zoo model's first convolution from the training images; a --backbone "
                        "brings its own: drop --whiten")
    return TransferRecipe(config) if transfers(config) else ScratchRecipe(config, log)
