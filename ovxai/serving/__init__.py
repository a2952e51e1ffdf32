"""Serving the patched model. ``ovxai serve``: the Open Inference Protocol as data (:mod:`.protocol`), the
handlers both hostings share (:mod:`.handlers`: the model, admission, every endpoint), the engine's batcher
(:mod:`.batching`), the REST app (:mod:`.rest`) and gRPC service (:mod:`.grpc_service`, :mod:`.grpc_messages`),
hosted in process (:mod:`.embedded`, uvicorn) or on Ray Serve (:mod:`.ray_host`), configured by
:mod:`.options`. Also the model source (:mod:`.source`), ``ovxai explain --ray`` (:mod:`.collection`) and the
model-repository layout (:mod:`.repository`). uvicorn, grpc and Ray are imported only by the modules that
host; ``ovxai.runtime`` imports none of them."""
