"""The explanatory hook: what to explain (:mod:`.target`), the tail plan (:mod:`.tail`), the ways of computing the
masked copies, the CNN and ViT hooks and their cost. Written once against :class:`ovxai.graph.ops.Ops`."""
