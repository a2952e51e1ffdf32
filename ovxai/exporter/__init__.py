"""``ovxai export``: the pipeline from a model file (:mod:`.pipeline`) or a torch module (:mod:`.from_torch`)
to ONE patched model file."""
