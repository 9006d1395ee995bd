"""TF Serving's gRPC API (``tensorflow.serving.PredictionService`` and ``ModelService``) over the same calls
as REST, with the protos of Google's ``tensorflow-serving-api`` package, so a client written with its
``PredictionServiceStub`` and ``tf.make_tensor_proto`` works unchanged.  Classify, Regress and
MultiInference (tf.Example APIs our image signatures do not have) answer UNIMPLEMENTED, as TF Serving does
for a model without such a signature.
"""

from __future__ import annotations

import sys
import time
import traceback

import grpc
from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2, model_service_pb2_grpc,
                                     predict_pb2, prediction_service_pb2_grpc)

from server.errors import ServingError, invalid
from server.metrics import Metrics
from server.service import Service
from server.servable import INPUT
from server.tensors import from_tensor_proto, to_tensor_proto

STATES = get_model_status_pb2.ModelVersionStatus.State


def _version(spec) -> int | None:
    if spec.WhichOneof("version_choice") == "version_label":
        raise invalid("Version labels are not supported by this server; ask for a version number")
    return spec.version.value if spec.HasField("version") else None


class _Calls:
    """Shared by both services: timing, metrics, and ServingError -> a gRPC status."""

    def __init__(self, service: Service, metrics: Metrics):
        self.service, self.metrics = service, metrics

    async def call(self, method: str, request, context, work):
        start, code = time.perf_counter(), "OK"
        name = request.model_spec.name if request.HasField("model_spec") else "?"
        try:
            if not name or name == "?":
                raise invalid("model_spec.name is missing")
            return await work()
        except ServingError as error:
            code = error.code
            await context.abort(getattr(grpc.StatusCode, error.code), str(error))
        except Exception as error:  # a bug: one line to the caller, the traceback to the log
            if isinstance(error, grpc.aio.AbortError):
                raise
            code = "INTERNAL"
            traceback.print_exc(file=sys.stderr)
            await context.abort(grpc.StatusCode.INTERNAL, f"Internal error: {type(error).__name__}: {error}")
        finally:
            self.metrics.observe("grpc", name, method, code, time.perf_counter() - start)


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer, _Calls):
    async def Predict(self, request, context):
        async def work():
            if set(request.inputs) != {INPUT}:
                raise invalid(f"inputs: this model has one input, {INPUT!r}; got {sorted(request.inputs)[:5]}")
            images = from_tensor_proto(request.inputs[INPUT], INPUT)
            if images.ndim >= 1 and len(images) > self.service.settings.max_instances:
                raise invalid(f"{len(images)} images in one request; the limit is "
                              f"{self.service.settings.max_instances}")
            servable, outputs = await self.service.predict(
                request.model_spec.name, _version(request.model_spec), request.model_spec.signature_name or None,
                images, tuple(request.output_filter))
            response = predict_pb2.PredictResponse()
            response.model_spec.name = servable.name
            response.model_spec.version.value = servable.version
            response.model_spec.signature_name = request.model_spec.signature_name or "serving_default"
            for key, value in outputs.items():
                response.outputs[key].CopyFrom(to_tensor_proto(value))
            return response

        return await self.call("predict", request, context, work)

    async def GetModelMetadata(self, request, context):
        async def work():
            if list(request.metadata_field) != ["signature_def"]:
                raise invalid(f"metadata_field must be ['signature_def'], got {list(request.metadata_field)}")
            servable = self.service.servable(request.model_spec.name, _version(request.model_spec))
            response = get_model_metadata_pb2.GetModelMetadataResponse()
            response.model_spec.name = servable.name
            response.model_spec.version.value = servable.version
            response.metadata["signature_def"].Pack(servable.signature_defs)
            return response

        return await self.call("metadata", request, context, work)


class ModelService(model_service_pb2_grpc.ModelServiceServicer, _Calls):
    async def GetModelStatus(self, request, context):
        async def work():
            response = get_model_status_pb2.GetModelStatusResponse()
            for entry in self.service.status(request.model_spec.name, _version(request.model_spec)):
                status = response.model_version_status.add()
                status.version = int(entry["version"])
                status.state = STATES.Value(entry["state"])
                status.status.error_code = 0 if entry["status"]["error_code"] == "OK" else 2  # UNKNOWN
                status.status.error_message = entry["status"]["error_message"]
            return response

        return await self.call("status", request, context, work)


def build_server(service: Service, metrics: Metrics, max_message_bytes: int, *, shared: bool = False):
    # SO_REUSEPORT only for --workers: otherwise a port another program holds must be an error, not shared.
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", max_message_bytes),
                                      ("grpc.max_send_message_length", max_message_bytes),
                                      ("grpc.so_reuseport", 1 if shared else 0)])
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionService(service, metrics), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(service, metrics), server)
    return server
