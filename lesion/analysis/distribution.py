"""Where the neurons sit: counts by layer and component kind (the "outer layers, down_proj" finding)."""
from __future__ import annotations

from collections import Counter
from typing import Sequence

from ..model.neurons import Neuron, SiteIndex
from ..results.analysis import DistributionData, LayerKindCell, LayerKindCounts


def layer_kind_counts(index: SiteIndex, neurons: Sequence[Neuron]) -> LayerKindCounts:
    counts: Counter = Counter()
    for n in neurons:
        site = index.site(n)
        counts[(site.layer, site.kind)] += 1
    return LayerKindCounts(
        cells=tuple(LayerKindCell(layer=layer, kind=kind, count=c) for (layer, kind), c in sorted(counts.items())),
        by_kind=dict(Counter(index.site(n).kind for n in neurons).most_common()),
        by_layer={str(k): v for k, v in sorted(Counter(index.site(n).layer for n in neurons).items())})


def distribution(index: SiteIndex, ranking_neurons: Sequence[Neuron], critical: Sequence[Neuron],
                 top_k: Sequence[int] = (10, 100, 1000)) -> DistributionData:
    return DistributionData(layers=tuple(sorted({s.layer for s in index.sites})),
                            kinds=tuple(sorted({s.kind for s in index.sites})),
                            critical=layer_kind_counts(index, critical),
                            top={f"top{k}": layer_kind_counts(index, ranking_neurons[:k]) for k in top_k})
