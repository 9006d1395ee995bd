"""Transfer learning: a pretrained backbone, a new head, and how much of the backbone trains.

The story, in the order a run follows it:

1. **Load a backbone.**  ``load_backbone("mobilenet_v2", input_shape=(160, 160, 3))``
   gives a ``Backbone``: ``features`` (the network without its classifier),
   the ``preprocessing`` layer its ImageNet weights expect (so nobody forgets
   to normalize) and ``fine_tune_from``, where fine-tuning usually starts.
   ``BACKBONES`` holds that metadata for each keras.applications network; a
   zoo name, a run's ``model.keras`` or an export folder work too.  Offline,
   ImageNet weights come from ``~/.keras/models`` (or ``--weights PATH``).

2. **Put a head on it.**  ``classifier_network(backbone, num_classes)`` is
   preprocessed images -> ``backbone.features`` -> ``head_model(...)`` (global
   pooling, dropout, optional hidden layers, softmax).  The backbone always
   runs in inference mode, so batch norm keeps its ImageNet statistics.
   ``core.model.assemble(network, input_shape,
   preprocessing=backbone.preprocessing)`` turns it into a training model
   whose exports take raw pixels like any other.

3. **Start from a linear probe, then train in two phases (LP-FT).**
   ``start_from_probe`` fits a logistic regression on the frozen features and
   starts the head from it: a random head would otherwise send large
   gradients into the pretrained weights, and on a small folder might not
   finish learning before fine-tuning starts.  Then ``freeze(backbone,
   "all")`` and train the head at an ordinary learning rate.  Then unfreeze the top
   (``freeze(backbone, "from:auto")``, or ``last:N``, ``blocks:N``,
   ``fraction:F``, ``pattern:REGEX``), recompile, and fine-tune at a rate
   about ten times smaller; ``discriminative_multipliers`` slows the earlier
   unfrozen blocks further.  Batch norm stays frozen throughout.
   ``describe_freeze(model)`` says what trains.

4. **Fast path.**  While the backbone is frozen and no augmentation runs, its
   output never changes: ``extract_features`` computes it once, the head
   trains on the stored features, and ``classifier_network(backbone,
   head=head)`` puts that same head back on the backbone.

5. **The floor.**  The probe is the number fine-tuning has to beat:
   ``choose`` keeps the fine-tuned network only if it is not below the probe
   on validation (a tie in accuracy goes to the lower cross-entropy).  ``sklearn_baseline(backbone, data)`` scores the same probe
   on every split.

Loading a ``.keras`` file that holds a transfer model needs this package
imported first: it registers ``ImagenetPreprocessing`` and ``InferenceMode``.
"""

from transfer.backbones import (
    BACKBONES,
    PREPROCESSING_MODES,
    Backbone,
    BackboneSpec,
    ImagenetPreprocessing,
    is_architecture,
    load_backbone,
    names,
)
from transfer.features import extract_features, feature_extractor, pooled, sklearn_baseline
from transfer.finetune import (
    FINETUNE_FACTOR,
    FINETUNE_WARMUP,
    HEAD_LR,
    ProbeStart,
    choose,
    cross_entropy,
    start_from_probe,
    unfreeze_top,
)
from transfer.freeze import (
    POLICY_FORMS,
    describe_freeze,
    discriminative_multipliers,
    freeze,
    leaf_layers,
    parameter_counts,
    unfreeze,
)
from transfer.heads import InferenceMode, Standardize, classifier_network, head_model
from transfer.probe import Probe, fit_probe, initialize_head

__all__ = [
    "FINETUNE_FACTOR",
    "FINETUNE_WARMUP",
    "HEAD_LR",
    "BACKBONES",
    "POLICY_FORMS",
    "PREPROCESSING_MODES",
    "Backbone",
    "BackboneSpec",
    "ImagenetPreprocessing",
    "InferenceMode",
    "Probe",
    "ProbeStart",
    "Standardize",
    "choose",
    "cross_entropy",
    "classifier_network",
    "describe_freeze",
    "discriminative_multipliers",
    "extract_features",
    "feature_extractor",
    "fit_probe",
    "freeze",
    "head_model",
    "is_architecture",
    "initialize_head",
    "leaf_layers",
    "load_backbone",
    "names",
    "parameter_counts",
    "pooled",
    "sklearn_baseline",
    "unfreeze_top",
    "start_from_probe",
    "unfreeze",
]
