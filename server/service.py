"""The calls both front ends make, in plain async functions: status, metadata, predict, classify, regress,
multi-inference and config reload as TF Serving defines them, and the image upload this toolkit adds.

REST (``server.rest``) and gRPC (``server.grpc_api``) only parse, call these and format, so both give the
same answers; the tests call these directly too.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import threading
import weakref

import numpy as np

from explain import METHODS as EXPLAIN_METHODS, explain as explain_images
from exports.load import load_keras_model
from imagesets.images import load_image, problem
from server.errors import ServingError, invalid
from server.models import Manager
from server.settings import Settings
from server.signatures import CLASSIFY, DEFAULT_SIGNATURE, REGRESS, Signature, check_method

ERROR_CODE_OK = "OK"
EXAMPLES_INPUT = "inputs"            # the tf.Example input of classify and regress signatures (TF Serving's)
METHODS = {CLASSIFY: "classification", REGRESS: "regression"}


@dataclasses.dataclass(frozen=True)
class Spec:
    """A request's ModelSpec: the model, and at most one of a version number and a version label."""
    name: str
    version: int | None = None
    label: str | None = None
    signature_name: str | None = None


class Service:
    def __init__(self, manager: Manager, settings: Settings, reload=None):
        self.manager, self.settings = manager, settings
        self._reload = reload  # ModelServerConfig -> None, when the server runs from a model list
        self._keras_models = weakref.WeakKeyDictionary()  # servable -> its export's Keras model, for :explain
        self._keras_lock = threading.Lock()

    # --- model status and metadata ----------------------------------------------------------------------

    def status(self, name: str, version: int | None = None, label: str | None = None) -> list[dict]:
        """``model_version_status`` entries as TF Serving's GetModelStatus gives them (newest first)."""
        model = self.manager.model(name)
        if label is not None:
            version = model.version_of(label)
        statuses = model.statuses()
        if version is not None:
            statuses = [s for s in statuses if s.version == version]
            if not statuses:
                raise ServingError("NOT_FOUND", f"Could not find version {version} of model {name}")
        return [{"version": str(s.version), "state": s.state,
                 "status": {"error_code": "UNKNOWN" if s.error else ERROR_CODE_OK, "error_message": s.error}}
                for s in sorted(statuses, key=lambda s: -s.version)]

    def servable(self, name: str, version: int | None = None, label: str | None = None):
        return self.manager.servable(name, version, label)

    def models(self) -> list[dict]:
        """What the page shows: each image model's serving version, input and the metadata of its run."""
        found = []
        for name in sorted(self.manager.models):
            try:
                servable = self.servable(name)
            except ServingError:
                continue
            if servable.extras is None:
                continue  # not an image classifier of this toolkit's: served, but not on the page
            meta = servable.metadata
            found.append({"name": name, "version": servable.version, "input_shape": list(servable.input_shape),
                          "classes": servable.class_names, "model": meta.get("model"),
                          "dataset": meta.get("dataset"), "test_accuracy": meta.get("test_accuracy")})
        return found

    # --- predict -----------------------------------------------------------------------------------------

    async def _answer(self, name: str, future) -> dict[str, np.ndarray]:
        try:
            async with asyncio.timeout(self.settings.request_timeout_s):  # no extra task, unlike wait_for
                return await asyncio.wrap_future(future)
        except TimeoutError:
            raise ServingError("DEADLINE_EXCEEDED", f"No answer from {name} within "
                                                    f"{self.settings.request_timeout_s:g} s") from None

    async def predict(self, spec: Spec, inputs: dict[str, np.ndarray], output_filter=(), *, servable=None,
                      signature: Signature | None = None) -> tuple[object, Signature, dict[str, np.ndarray]]:
        """(the version that answered, its signature, the outputs).  ``servable`` and ``signature`` when the
        caller has already found them (REST looks first, to parse the body by the signature's inputs)."""
        servable = servable or self.servable(spec.name, spec.version, spec.label)
        signature = signature or servable.signature(spec.signature_name)
        wanted = list(dict.fromkeys(output_filter))
        unknown = [name for name in wanted if name not in signature.outputs]
        if unknown:
            raise invalid(f"output tensor alias not found in signature: {unknown[0]} Outputs expected to be in the "
                          f"set {{{','.join(signature.outputs)}}}.")
        outputs = await self._answer(spec.name, servable.submit(signature, inputs))
        if wanted:
            outputs = {k: v for k, v in outputs.items() if k in wanted}
        return servable, signature, outputs

    # --- classify and regress: tf.Examples in --------------------------------------------------------------

    def _example_signature(self, servable, signature_name: str | None, method: str) -> Signature:
        signature = servable.signature(signature_name, "examples")
        # TF2 writes every signature as predict, so TF Serving checks the method only when asked
        # (--enable_signature_method_name_check); the tf.Example input is checked either way.
        if self.settings.signature_method_name_check:
            check_method(signature, method, METHODS[method])
        if list(signature.inputs) != [EXAMPLES_INPUT] or not signature.inputs[EXAMPLES_INPUT].is_string:
            raise invalid(f"Expected one input Tensor named {EXAMPLES_INPUT!r} of serialized tf.Examples in "
                          f"{METHODS[method]} signature {signature.name}")
        return signature

    async def classify(self, spec: Spec, examples: list[bytes]) -> tuple[object, Signature, list[list[tuple]]]:
        """Per example, its (label, score) pairs, as TF Serving's ClassificationResult holds them."""
        servable = self.servable(spec.name, spec.version, spec.label)
        signature = self._example_signature(servable, spec.signature_name, CLASSIFY)
        _, _, outputs = await self.predict(spec, {EXAMPLES_INPUT: np.array(examples, dtype=object)},
                                           servable=servable, signature=signature)
        classes, scores = outputs.get("classes"), outputs.get("scores")
        if classes is None and scores is None:
            raise invalid(f"Expected classification signature outputs to contain classes and/or scores; "
                          f"{signature.name} has {', '.join(signature.outputs)}")
        count = len(examples)
        classes = None if classes is None else np.asarray(classes).reshape(count, -1)
        scores = None if scores is None else np.asarray(scores, np.float64).reshape(count, -1)
        width = (classes if classes is not None else scores).shape[1]
        results = []
        for i in range(count):
            results.append([(_text(classes[i, j]) if classes is not None else "",
                             float(scores[i, j]) if scores is not None else 0.0) for j in range(width)])
        return servable, signature, results

    async def regress(self, spec: Spec, examples: list[bytes]) -> tuple[object, Signature, list[float]]:
        servable = self.servable(spec.name, spec.version, spec.label)
        signature = self._example_signature(servable, spec.signature_name, REGRESS)
        _, _, outputs = await self.predict(spec, {EXAMPLES_INPUT: np.array(examples, dtype=object)},
                                           servable=servable, signature=signature)
        if "outputs" not in outputs:
            raise invalid(f"Expected one output Tensor named 'outputs' in regression signature {signature.name}")
        values = np.asarray(outputs["outputs"], np.float64)
        if values.size != len(examples):
            raise invalid(f"Expected output Tensor shape to be [batch_size] or [batch_size, 1], got "
                          f"{list(values.shape)}")
        return servable, signature, [float(v) for v in values.reshape(-1)]

    async def multi_inference(self, tasks: list[tuple[Spec, str]], examples: list[bytes]) -> list[tuple]:
        """Several classify and regress signatures of one model over the same examples: per task (method,
        servable, signature, result)."""
        if not tasks:
            raise invalid("MultiInferenceRequest has no tasks")
        if len({spec.name for spec, _ in tasks}) > 1:
            raise invalid("All ModelSpecs in a MultiInferenceRequest must access the same model name.")
        seen = set()
        answers = []
        for spec, method in tasks:
            if method not in METHODS:
                raise ServingError("UNIMPLEMENTED", f"Unsupported signature method_name: {method}")
            key = spec.signature_name or DEFAULT_SIGNATURE
            if key in seen:
                raise invalid(f"Duplicate evaluation of signature: {key}")
            seen.add(key)
            call = self.classify if method == CLASSIFY else self.regress
            servable, signature, result = await call(spec, examples)
            answers.append((method, servable, signature, result))
        return answers

    # --- config reload (ModelService.HandleReloadConfigRequest) --------------------------------------------

    async def reload_config(self, config) -> None:
        if self._reload is None:
            raise ServingError("FAILED_PRECONDITION", "This server serves folders named on its command line; "
                                                      "start it with --model_config_file or --model_base_path to "
                                                      "reload a model list")
        await asyncio.get_running_loop().run_in_executor(None, self._reload, config)

    # --- the image upload: image files in, top-k classes out (this toolkit's exports) ---------------------

    def decode(self, servable, files: list[tuple[str, bytes]]) -> np.ndarray:
        """Image files converted exactly as ``predict.py`` and the training data are (any format, mode, size)."""
        height, width, channels = servable.input_shape
        images = []
        for filename, data in files:
            try:
                images.append(load_image(io.BytesIO(data), (height, width), channels))
            except Exception as error:  # a user's file: say which and why, never a 500
                raise invalid(f"{filename}: {problem(error)}") from None
        return np.stack(images).astype(np.float32)

    async def upload(self, name: str, version: int | None, files: list[tuple[str, bytes]],
                     top_k: int | None = None, label: str | None = None) -> dict:
        if not files:
            raise invalid("No image files in the request: send them as multipart/form-data")
        if len(files) > self.settings.max_images:
            raise invalid(f"{len(files)} images in one request; the limit is {self.settings.max_images}")
        servable = self.servable(name, version, label)
        if servable.extras is None:
            raise invalid(f"{name} is not an image classifier exported by this toolkit (its export has no "
                          "assets/metadata.json); send tensors to :predict instead")
        k = self.settings.top_k if top_k is None else top_k
        if not 1 <= k:
            raise invalid(f"top_k must be at least 1, got {k}")
        k = min(k, len(servable.class_names))
        images = await asyncio.get_running_loop().run_in_executor(None, self.decode, servable, files)
        _, _, outputs = await self.predict(Spec(name, servable.version), {"images": images}, servable=servable)
        probabilities = outputs["probabilities"]
        return {"model": name, "version": servable.version,
                "predictions": [{"file": filename,
                                 "top": [{"class": servable.class_names[i], "probability": float(row[i])}
                                         for i in np.argsort(-row)[:k]]}
                                for (filename, _), row in zip(files, probabilities)]}

    # --- explain: class heatmaps (KServe's verb; this toolkit's exports) ------------------------------------

    def keras_model(self, servable):
        """The export's Keras model (``assets/model.keras``), loaded once per version on first use."""
        with self._keras_lock:
            model = self._keras_models.get(servable)
            if model is None:
                try:
                    model = self._keras_models[servable] = load_keras_model(servable.path)
                except Exception as error:  # UserError: no model.keras (an older export), or it does not load
                    raise ServingError("FAILED_PRECONDITION", str(error)) from None
            return model

    def explainable(self, name: str, version: int | None, label: str | None):
        servable = self.servable(name, version, label)
        if servable.extras is None:
            raise invalid(f"{name} is not an image classifier exported by this toolkit (its export has no "
                          "assets/metadata.json): :explain needs the export's Keras model")
        return servable

    async def explain(self, spec: Spec, images: np.ndarray, *, class_index=None, method: str = "gradcam",
                      servable=None) -> tuple[object, dict[str, np.ndarray]]:
        """(the version that answered, ``{"heatmaps": (N, H, W) in [0, 1], "class_ids", "classes",
        "probabilities"}``): the heatmap of each image's top class, or of ``class_index``."""
        servable = servable or self.explainable(spec.name, spec.version, spec.label)
        if method not in EXPLAIN_METHODS:
            raise invalid(f"Unknown method {method!r} (valid: {', '.join(EXPLAIN_METHODS)})")
        shape = tuple(servable.input_shape)
        if images.ndim != 4 or tuple(images.shape[1:]) != shape:
            raise invalid(f"{spec.name} explains images of shape [-1,{','.join(map(str, shape))}], got "
                          f"{list(images.shape)}")
        if len(images) > self.settings.max_images:
            raise invalid(f"{len(images)} images in one :explain request; the limit is {self.settings.max_images}")
        _, _, outputs = await self.predict(Spec(spec.name, servable.version), {"images": images.astype(np.float32)},
                                           servable=servable)
        probabilities = np.asarray(outputs["probabilities"])
        classes = probabilities.argmax(axis=1) if class_index is None else np.broadcast_to(
            np.asarray(class_index, np.int64), (len(images),))
        if ((classes < 0) | (classes >= len(servable.class_names))).any():
            raise invalid(f"class_index must be in [0, {len(servable.class_names)}), got {class_index!r}")

        def compute():
            return explain_images(self.keras_model(servable), images.astype(np.float32), method, classes)

        try:
            heatmaps = await asyncio.get_running_loop().run_in_executor(None, compute)
        except ValueError as error:  # a network without feature maps for Grad-CAM
            raise invalid(str(error)) from None
        return servable, {"heatmaps": heatmaps, "class_ids": classes.astype(np.int64),
                          "classes": np.array([servable.class_names[i] for i in classes], dtype=object),
                          "probabilities": probabilities}

    async def upload_explain(self, name: str, version: int | None, files: list[tuple[str, bytes]],
                             top_k: int | None = None, label: str | None = None, method: str = "gradcam") -> dict:
        """The upload's answer, each prediction with the ``heatmap`` of its top class (rows of the model's input
        height, values in [0, 1] to three decimals): what the page draws over the dropped image."""
        servable = self.explainable(name, version, label)
        answer = await self.upload(name, servable.version, files, top_k)
        images = await asyncio.get_running_loop().run_in_executor(None, self.decode, servable, files)
        _, outputs = await self.explain(Spec(name, servable.version), images, method=method, servable=servable)
        for prediction, heatmap in zip(answer["predictions"], outputs["heatmaps"]):
            prediction["heatmap"] = np.round(heatmap, 3).tolist()
            # Grad-CAM keeps only positive evidence; a tanh network such as the paper's LeNet-5 can have none at
            # its last maps, and a blank map should not pass for "looked nowhere".
            prediction["method"], prediction["blank"] = method, bool(heatmap.max() <= 0)
        return answer


def _text(value) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
