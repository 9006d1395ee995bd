"""A model opened up: every layer of every nested model reachable, so a convolution's maps can be looked at.

The classic failure of Grad-CAM code on transfer models is ``Graph disconnected``: the pretrained backbone is a
model *inside* the model, and ``keras.Model(model.inputs, backbone.get_layer(name).output)`` mixes two graphs.
Here no new model is built.  The model's graph is run layer by layer (``core.compat.run_graph``), and every nested
functional model, ``Sequential`` and model-wrapping layer (``transfer.InferenceMode``) is opened and run the same
way, so each layer's output passes through our hands: the maps Grad-CAM needs are kept, and the logits before a
softmax are computed beside it.  The layers themselves run, with their own weights, in inference mode.

A first run on one blank image records each layer call (its path, such as ``backbone/block_16_project``, and its
input and output tensors); from that record come the layers Grad-CAM looks at (``target_layers``: the last feature
maps on every path to the output, one per member of an ensemble).
"""

from __future__ import annotations

import dataclasses
import weakref

import keras
import numpy as np
from keras import ops

from core import compat


@dataclasses.dataclass
class Call:
    index: int
    path: str                 # "backbone/block_16_project": nested model names, then the layer's
    inputs: list              # tensors of the recording run
    outputs: list
    layer: object


@dataclasses.dataclass
class Run:
    maps: dict                # call index -> that call's output
    logits: list              # pre-softmax tensors the output depends on
    output: object            # the model's output


class Graph:
    """A functional model's layer calls, and a way to run it keeping the maps of chosen calls."""

    def __init__(self, model: keras.Model):
        if not compat.is_functional(model):
            raise ValueError(f"{model.name} is not a functional Keras model; explanations need its graph "
                             "(build it with keras.Input, or load it from a .keras file)")
        self.model = model
        self.calls: list[Call] = []
        blank = np.zeros((1, *model.input_shape[1:]), np.float32)
        recorded = self._walk(blank, record=True)
        self.output = recorded.output
        reaches = self._reaching()
        self._softmax_used = {index for index in self._softmax if reaches.get(id(self.calls[index].outputs[0]))}

    def _walk(self, images, *, record: bool = False, keep=()) -> Run:
        maps, logits, prefix, counter = {}, [], [], [0]
        if record:
            self._softmax = []

        def run_model(inner, args):
            prefix.append(inner.name)
            try:
                if isinstance(inner, keras.Sequential):
                    x = args[0]
                    for layer in inner.layers:
                        x = visit(layer, x)
                    return x
                if not compat.is_functional(inner):
                    raise ValueError(f"{inner.name} is a subclassed model: explanations need a functional graph")
                return compat.run_graph(inner, args[0] if len(args) == 1 else list(args), visit)
            finally:
                prefix.pop()

        def visit(layer, *args, **kwargs):
            if isinstance(layer, keras.Model):
                return run_model(layer, args)
            wrapped = _wrapped_model(layer)
            if wrapped is not None:
                return run_model(wrapped, args)
            kwargs["training"] = False
            outputs = layer(*args, **kwargs)
            index = counter[0]
            counter[0] += 1
            if record:
                self.calls.append(Call(index, "/".join([*prefix[1:], layer.name]),
                                       [t for t in keras.tree.flatten(args) if hasattr(t, "shape")],
                                       keras.tree.flatten(outputs), layer))
                if _is_softmax(layer):
                    self._softmax.append(index)
            if index in keep:
                maps[index] = keras.tree.flatten(outputs)[0]
            if not record and index in self._softmax_used:
                logits.append(_pre_activation(layer, args[0]))
            return outputs

        output = run_model(self.model, [ops.convert_to_tensor(images)])
        return Run(maps, logits, output)

    def run(self, images, targets: list[Call]) -> Run:
        """The model on ``images``, keeping the outputs of ``targets`` and the logits (eager, or in a tape)."""
        return self._walk(images, keep={call.index for call in targets})

    def find(self, name: str) -> Call:
        """The call of the layer ``name``: its path, or its own name when that is unique."""
        exact = [call for call in self.calls if call.path == name]
        if exact:
            return exact[-1]
        matches = [call for call in self.calls if call.path.rsplit("/", 1)[-1] == name]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            known = [call.path for call in self.target_layers()]
            raise ValueError(f"No layer {name!r} in {self.model.name}"
                             + (f"; its last feature maps are {', '.join(known)}" if known else ""))
        raise ValueError(f"Layer name {name!r} is in several nested models ({', '.join(c.path for c in matches)}); "
                         "give its path")

    def _reaching(self) -> dict[int, bool]:
        """id(tensor) -> whether the model's output depends on it."""
        reaches = {id(t): True for t in keras.tree.flatten(self.output)}
        for call in reversed(self.calls):   # calls are recorded in execution order: this is reverse-topological
            if any(reaches.get(id(t), False) for t in call.outputs):
                for t in call.inputs:
                    reaches[id(t)] = True
        return reaches

    def target_layers(self) -> list[Call]:
        """The last feature maps on every path to the output: 4-D outputs (more than one position) that a
        convolution made and from which no other such map can be reached.  One for a plain network, one per
        member of an ensemble; none for a network without convolutions."""
        convolved: set[int] = set()        # id(tensor) of feature maps a convolution has made (not the image)
        for call in self.calls:
            if is_spatial(call.outputs[0]) and (_convolves(call.layer) or any(id(t) in convolved for t in call.inputs)):
                convolved.update(id(t) for t in call.outputs)
        consumers: dict[int, list[Call]] = {}
        for call in self.calls:
            for tensor in call.inputs:
                consumers.setdefault(id(tensor), []).append(call)
        later_maps: dict[int, bool] = {}   # id(tensor) -> a spatial map lies downstream
        for call in reversed(self.calls):
            for tensor in call.outputs:
                below = [out for user in consumers.get(id(tensor), []) for out in user.outputs]
                later_maps[id(tensor)] = any(is_spatial(t) or later_maps.get(id(t), False) for t in below)
        reaches = self._reaching()
        return [call for call in self.calls if id(call.outputs[0]) in convolved
                and not later_maps[id(call.outputs[0])] and reaches.get(id(call.outputs[0]), False)]

    def spatial_layers(self) -> list[Call]:
        """Every call whose output is a feature map a convolution made, in order (for the feature-map plot)."""
        convolved: set[int] = set()
        for call in self.calls:
            if is_spatial(call.outputs[0]) and (_convolves(call.layer) or any(id(t) in convolved for t in call.inputs)):
                convolved.update(id(t) for t in call.outputs)
        return [call for call in self.calls if id(call.outputs[0]) in convolved]


def is_spatial(tensor) -> bool:
    """A batch of feature maps with more than one position (a 1x1 map gives a constant heatmap)."""
    shape = getattr(tensor, "shape", None)
    return shape is not None and len(shape) == 4 and (shape[1] or 0) * (shape[2] or 0) > 1


def _convolves(layer) -> bool:
    """A layer with a kernel over positions: a weight of rank 3 or more spanning more than one position or input
    channel (a Conv2D's (k, k, in, out), LeNet-5's packed C3), unlike a Normalization's (1, 1, 1, C) mean."""
    return any(len(w.shape) >= 3 and int(np.prod(tuple(w.shape)[:-1])) > 1 for w in layer.weights)


def _is_softmax(layer) -> bool:
    return isinstance(layer, keras.layers.Softmax) or getattr(layer, "activation", None) is keras.activations.softmax


def _pre_activation(layer, x):
    """What a softmax layer turns into probabilities: its input, or for a softmax Dense its own affine map."""
    if not isinstance(layer, keras.layers.Dense):
        return x
    y = ops.matmul(ops.cast(x, layer.kernel.dtype), layer.kernel)
    return y + layer.bias if layer.use_bias else y


def _wrapped_model(layer):
    """The model a layer holds and runs whole (``transfer.InferenceMode``): one ``keras.Model`` attribute and no
    weights of its own.  Opening it keeps its meaning, since explanations run in inference mode anyway."""
    models = [value for value in vars(layer).values() if isinstance(value, keras.Model)]
    if len(models) == 1 and len(layer.weights) == len(models[0].weights):
        return models[0]
    return None


_GRAPHS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def graph_of(model: keras.Model) -> Graph:
    """``model``'s Graph, recorded once per model and kept while the model lives."""
    graph = _GRAPHS.get(model)
    if graph is None:
        graph = _GRAPHS[model] = Graph(model)
    return graph
