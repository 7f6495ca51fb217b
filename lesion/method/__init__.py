"""The paper's method: Stage 1's rankers (:mod:`.rankers`, registered in :mod:`.scorers`), Stage 2
(:mod:`.stage2`), both as library calls on a text (:mod:`.study`), the Stage 1 cache (:mod:`.cache`),
the baselines compared (:mod:`.compare`) and what every result records it was made with
(:mod:`.provenance`)."""
