"""The calls both front ends make: status, metadata, predict and classify, in plain async functions.

REST (``server.rest``) and gRPC (``server.grpc_api``) only parse, call these and format, so both give the
same answers; the tests call these directly too.
"""

from __future__ import annotations

import asyncio
import io

import numpy as np

from imagesets.images import load_image, problem
from server.errors import ServingError, invalid
from server.models import Manager
from server.settings import Settings

ERROR_CODE_OK = "OK"


class Service:
    def __init__(self, manager: Manager, settings: Settings):
        self.manager, self.settings = manager, settings

    # --- model status and metadata ----------------------------------------------------------------------

    def status(self, name: str, version: int | None = None) -> list[dict]:
        """``model_version_status`` entries as TF Serving's GetModelStatus gives them (newest first)."""
        statuses = self.manager.model(name).statuses()
        if version is not None:
            statuses = [s for s in statuses if s.version == version]
            if not statuses:
                raise ServingError("NOT_FOUND", f"Could not find version {version} of model {name}")
        return [{"version": str(s.version), "state": s.state,
                 "status": {"error_code": "UNKNOWN" if s.error else ERROR_CODE_OK, "error_message": s.error}}
                for s in sorted(statuses, key=lambda s: -s.version)]

    def servable(self, name: str, version: int | None = None):
        return self.manager.model(name).servable(version)

    def models(self) -> list[dict]:
        """What the page shows: each model's serving version, input and the metadata of its run."""
        found = []
        for name in sorted(self.manager.models):
            try:
                servable = self.servable(name)
            except ServingError:
                continue
            meta = servable.metadata
            found.append({"name": name, "version": servable.version, "input_shape": list(servable.input_shape),
                          "classes": servable.class_names, "model": meta.get("model"),
                          "dataset": meta.get("dataset"), "test_accuracy": meta.get("test_accuracy")})
        return found

    # --- predict -----------------------------------------------------------------------------------------

    async def predict(self, name: str, version: int | None, signature_name: str | None,
                      images: np.ndarray, output_filter=()) -> tuple[object, dict[str, np.ndarray]]:
        servable = self.servable(name, version)
        servable.check_signature(signature_name)
        unknown = set(output_filter) - set(servable.output_names)
        if unknown:
            raise invalid(f"output_filter: unknown output(s) {sorted(unknown)}; the outputs are "
                          f"{servable.output_names}")
        future = servable.predict(images)
        try:
            async with asyncio.timeout(self.settings.request_timeout_s):  # no extra task, unlike wait_for
                outputs = await asyncio.wrap_future(future)
        except TimeoutError:
            raise ServingError("DEADLINE_EXCEEDED", f"No answer from {name} within "
                                                    f"{self.settings.request_timeout_s:g} s") from None
        if output_filter:
            outputs = {k: v for k, v in outputs.items() if k in set(output_filter)}
        return servable, outputs

    # --- classify: image files in, top-k classes out -----------------------------------------------------

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

    async def classify(self, name: str, version: int | None, files: list[tuple[str, bytes]],
                       top_k: int | None = None) -> dict:
        if not files:
            raise invalid("No image files in the request: send them as multipart/form-data")
        if len(files) > self.settings.max_images:
            raise invalid(f"{len(files)} images in one request; the limit is {self.settings.max_images}")
        servable = self.servable(name, version)
        k = self.settings.top_k if top_k is None else top_k
        if not 1 <= k:
            raise invalid(f"top_k must be at least 1, got {k}")
        k = min(k, len(servable.class_names))
        images = await asyncio.get_running_loop().run_in_executor(None, self.decode, servable, files)
        servable, outputs = await self.predict(name, servable.version, None, images)
        probabilities = outputs["probabilities"]
        return {"model": name, "version": servable.version,
                "predictions": [{"file": filename,
                                 "top": [{"class": servable.class_names[i], "probability": float(row[i])}
                                         for i in np.argsort(-row)[:k]]}
                                for (filename, _), row in zip(files, probabilities)]}
