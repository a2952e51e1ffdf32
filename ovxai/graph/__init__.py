"""The graph layer: a format-neutral view of a model (:mod:`.view`), the tensor operations the hook is written
against (:mod:`.ops`, with an eager numpy implementation for tests), compute counts (:mod:`.macs`) and the
batch rewriting of exported graphs (:mod:`.batch`). It knows nothing of the hook."""
