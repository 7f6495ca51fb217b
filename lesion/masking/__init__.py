"""Lesions and what they cost: masking neuron outputs (:mod:`.masks`), single weights
(:mod:`.weight_lesions`), scoring many neuron sets in batched rows (:mod:`.ablation`) and the
paper's perplexity and Delta (:mod:`.metrics`)."""
