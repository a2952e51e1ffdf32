"""Gradient CAMs inside the exported graph: the backward of the tail as forward ops (:mod:`.rules`, swept by
:mod:`.backward` over :mod:`.flow`), the methods that weight the target map by it (:mod:`.methods`,
:mod:`.integrated`) and the hook that emits them (:mod:`.hook`)."""
