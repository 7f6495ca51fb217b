"""What every part of lesion runs on, knowing nothing of models: files (the one atomic writer, JSON,
output checks, the orphan sweep, the cache folder), option checks, anytime work (budgets, Ctrl-C),
batches that shrink when memory runs out, and data-parallel runs under torchrun."""
