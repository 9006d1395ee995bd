"""TF Serving's gRPC API (``tensorflow.serving.PredictionService`` and ``ModelService``) over the same calls
as REST, with the protos of Google's ``tensorflow-serving-api`` package, so a client written with its
``PredictionServiceStub`` and ``tf.make_tensor_proto`` works unchanged: Predict, Classify, Regress,
MultiInference, GetModelMetadata, GetModelStatus and HandleReloadConfigRequest.
"""

from __future__ import annotations

import sys
import time
import traceback

import grpc
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2, get_model_status_pb2,
                                     inference_pb2, model_management_pb2, model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc, regression_pb2)

from server.errors import ServingError, invalid
from server.metrics import Metrics
from server.service import Service, Spec
from server.signatures import CLASSIFY, input_spec
from server.tensors import check_row_limit, from_tensor_proto, serialized_examples, to_tensor_proto

STATES = get_model_status_pb2.ModelVersionStatus.State


def spec_of(model_spec) -> Spec:
    """A ModelSpec proto: a version number, a version label, or neither (the newest)."""
    choice = model_spec.WhichOneof("version_choice")
    return Spec(model_spec.name,
                model_spec.version.value if choice == "version" else None,
                model_spec.version_label if choice == "version_label" else None,
                model_spec.signature_name or None)


def fill_spec(target, servable, signature_name: str) -> None:
    target.name = servable.name
    target.version.value = servable.version
    target.signature_name = signature_name


class _Calls:
    """Shared by both services: timing, metrics, and ServingError -> a gRPC status."""

    def __init__(self, service: Service, metrics: Metrics):
        self.service, self.metrics = service, metrics

    async def call(self, method: str, name: str, context, work):
        start, code = time.perf_counter(), "OK"
        try:
            if not name:
                raise invalid("Missing ModelSpec")
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
            self.metrics.observe("grpc", name or "?", method, code, time.perf_counter() - start)


def _name(request) -> str:
    return request.model_spec.name if request.HasField("model_spec") else ""


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer, _Calls):
    async def Predict(self, request, context):
        async def work():
            spec = spec_of(request.model_spec)
            servable = self.service.servable(spec.name, spec.version, spec.label)
            signature = servable.signature(spec.signature_name)
            inputs = {alias: from_tensor_proto(proto, input_spec(signature, alias), alias)
                      for alias, proto in request.inputs.items()}
            check_row_limit(inputs, self.service.settings.max_instances)
            servable, signature, outputs = await self.service.predict(
                spec, inputs, tuple(request.output_filter), servable=servable, signature=signature)
            response = predict_pb2.PredictResponse()
            fill_spec(response.model_spec, servable, signature.name)
            for key, value in outputs.items():
                response.outputs[key].CopyFrom(to_tensor_proto(value))
            return response

        return await self.call("predict", _name(request), context, work)

    async def Classify(self, request, context):
        async def work():
            servable, signature, results = await self.service.classify(spec_of(request.model_spec),
                                                                       serialized_examples(request.input))
            response = classification_pb2.ClassificationResponse()
            fill_spec(response.model_spec, servable, signature.name)
            _classifications(response.result, results)
            return response

        return await self.call("classify", _name(request), context, work)

    async def Regress(self, request, context):
        async def work():
            servable, signature, values = await self.service.regress(spec_of(request.model_spec),
                                                                     serialized_examples(request.input))
            response = regression_pb2.RegressionResponse()
            fill_spec(response.model_spec, servable, signature.name)
            for value in values:
                response.result.regressions.add().value = value
            return response

        return await self.call("regress", _name(request), context, work)

    async def MultiInference(self, request, context):
        async def work():
            tasks = [(spec_of(task.model_spec), task.method_name) for task in request.tasks]
            answers = await self.service.multi_inference(tasks, serialized_examples(request.input))
            response = inference_pb2.MultiInferenceResponse()
            for method, servable, signature, result in answers:
                entry = response.results.add()
                fill_spec(entry.model_spec, servable, signature.name)
                if method == CLASSIFY:
                    _classifications(entry.classification_result, result)
                else:
                    for value in result:
                        entry.regression_result.regressions.add().value = value
            return response

        name = request.tasks[0].model_spec.name if request.tasks else "?"
        return await self.call("multi_inference", name, context, work)

    async def GetModelMetadata(self, request, context):
        async def work():
            if not request.metadata_field:
                raise invalid("GetModelMetadataRequest must specify at least one metadata_field")
            for field in request.metadata_field:
                if field != "signature_def":
                    raise invalid(f"Metadata field {field} is not supported")
            spec = spec_of(request.model_spec)
            servable = self.service.servable(spec.name, spec.version, spec.label)
            response = get_model_metadata_pb2.GetModelMetadataResponse()
            fill_spec(response.model_spec, servable, "")
            response.metadata["signature_def"].Pack(servable.signature_defs)
            return response

        return await self.call("metadata", _name(request), context, work)


def _classifications(target, results) -> None:
    for pairs in results:
        classification = target.classifications.add()
        for label, score in pairs:
            entry = classification.classes.add()
            entry.label, entry.score = label, score


class ModelService(model_service_pb2_grpc.ModelServiceServicer, _Calls):
    async def GetModelStatus(self, request, context):
        async def work():
            spec = spec_of(request.model_spec)
            response = get_model_status_pb2.GetModelStatusResponse()
            for entry in self.service.status(spec.name, spec.version, spec.label):
                status = response.model_version_status.add()
                status.version = int(entry["version"])
                status.state = STATES.Value(entry["state"])
                status.status.error_code = 0 if entry["status"]["error_code"] == "OK" else 2  # UNKNOWN
                status.status.error_message = entry["status"]["error_message"]
            return response

        return await self.call("status", _name(request), context, work)

    async def HandleReloadConfigRequest(self, request, context):
        async def work():
            # A config that cannot be applied is the call's status, as TF Serving's ToGRPCStatus makes it; the
            # models served before keep serving.
            await self.service.reload_config(request.config)
            return model_management_pb2.ReloadConfigResponse()

        return await self.call("reload_config", "config", context, work)


def build_server(service: Service, metrics: Metrics, max_message_bytes: int, *, shared: bool = False,
                 options=()):
    # SO_REUSEPORT only for --workers: otherwise a port another program holds must be an error, not shared.
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", max_message_bytes),
                                      ("grpc.max_send_message_length", max_message_bytes),
                                      ("grpc.so_reuseport", 1 if shared else 0), *options])
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionService(service, metrics), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(service, metrics), server)
    return server
