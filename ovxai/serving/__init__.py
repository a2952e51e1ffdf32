"""Serving the patched model: the model source, ``ovxai serve`` (:mod:`.server`), ``ovxai explain --ray``
(:mod:`.collection`) and the model-repository layout (:mod:`.repository`)."""
