"""The smallest heel lesion can find: screen a multi-signal pool, select greedily, prune, certify.

The paper's answer is the first top-n of one ranking that crosses epsilon, a prefix that
is long on most models. Here instead:

1. **pool**: the union of several signals' top-m neurons (:mod:`.signals`);
2. **screen** (:mod:`.screen`): Delta of every pool neuron masked alone, one mask per batch row;
3. **select** (:mod:`.select`) (``--strategy``):
   - ``greedy``: forward selection: add the candidate that raises Delta most, re-screening
     the ``rescreen`` most promising others with the current set masked, until Delta >= epsilon;
   - ``topk``: mask the top-k by single Delta for k = 1, 2, ... (the first crossing);
   - ``prefix``: the paper's greedy prefix of the noise ranking;
4. **prune** (:mod:`.prune`) (``--prune``): ``elimination`` = delta debugging (drop halves, quarters, ... of a
   large set, each level one batched forward) then one backward-elimination pass, least
   important first; O(n) rows, not O(n^2). ``best-drop`` is the O(n^2) pruning of
   ``lesion minimal``. Either ends with a check that no single member can go: the set is
   irreducible;
5. **certify** (:mod:`.certify`): every subset of the top-p screened candidates smaller than the answer is
   tried (smallest first): either a smaller set is found and becomes the answer, or no set
   of the top p smaller than it reaches epsilon.

The objective over several texts is the worst text's Delta (a heel that collapses the
model on every input) or the mean. Every evaluated set is cached, so no set costs twice.

:mod:`.search` is the library call (:func:`search_heel`), :mod:`.run` the portfolio, :mod:`.minimal` answers the
same question exhaustively for small pools. The search is anytime (a row or time budget, or an interrupt,
returns the best set so far) and resumable from its :class:`SetJournal`."""
from .plan import SearchPlan
from .run import find_smallest_heel
from .journal import SetJournal, journal_path
from ..errors import BudgetExhausted
from .scorer import SetScorer
from .search import search_heel, search_with_transfer

__all__ = ["BudgetExhausted", "SearchPlan", "SetJournal", "SetScorer", "find_smallest_heel", "journal_path",
           "search_heel", "search_with_transfer"]
