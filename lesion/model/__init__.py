"""The model as lesion sees it: what a spec names (:mod:`.aliases`), loading it (:mod:`.loading`,
:mod:`.hub`, :mod:`.tokenizer`, :mod:`.model_cache`), the identity of its weights
(:mod:`.fingerprints`), where its neurons are (:mod:`.architectures`, :mod:`.neurons`,
:mod:`.experts`, :mod:`.expert_list`, :mod:`.coverage`), the weights around a neuron
(:mod:`.weights`) and the one way hooks go on it (:mod:`.hook_points`)."""
