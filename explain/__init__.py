"""Why a model answers as it does: class heatmaps, and what its layers learned.

Plain functions of a Keras model and a batch, used by a run's reports, ``predict.py --explain`` and the model
server's ``:explain``:

    heatmaps = explain.gradcam(model, images)                   # (N, H, W) in [0, 1], the top class
    heatmaps = explain.gradcam(model, images, class_index=3)    # or any class
    heatmaps = explain.occlusion(model, images)                 # from the outputs alone, no layer needed
    heatmaps = explain.integrated_gradients(model, images)      # at the pixels' own resolution
    filters = explain.first_filters(model)                      # what the first convolution learned
    stages = explain.feature_maps(model, image)                 # what each stage sees

Which to trust: Grad-CAM and occlusion pass Adebayo et al.'s model-parameter randomisation check on a trained
LeNet-5 (their maps change when the weights are re-initialised; ``tests/test_explain.py``); integrated gradients
from a black baseline does not on digits (rank correlation about 0.86 with the random network's maps: it mostly
outlines the digit), so it is offered for comparison, not as the default.

Nested backbones (transfer models), ensembles and every zoo family work: the model is flattened first
(``explain.graph``), so the layers inside a nested model are reachable.
"""

from explain.graph import graph_of
from explain.methods import (METHODS, class_activation_maps, explain, feature_maps, first_filters, gradcam,
                             integrated_gradients, occlusion)

__all__ = ["METHODS", "class_activation_maps", "explain", "feature_maps", "first_filters", "graph_of", "gradcam",
           "integrated_gradients", "occlusion"]
