"""The model server: TF Serving's REST and gRPC APIs over this toolkit's exports (``python train.py serve``).

A source watches the base folder for versions (``server.models``), each loaded version batches its own
requests (``server.batching``), ``server.service`` holds the calls, and ``server.rest`` and
``server.grpc_api`` are thin front ends over them.  Every limit is a named setting (``server.settings``).
"""
