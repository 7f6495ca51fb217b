"""The smallest heel lesion can find (``lesion search``): a multi-signal candidate pool,
greedy selection, O(n) pruning and a certificate; :mod:`.minimal` answers the same question
exhaustively for small pools."""
from .algorithms import SearchPlan, find_smallest_heel
from .scorer import BudgetExhausted, SetScorer
from .search import search_heel, search_with_transfer

__all__ = ["BudgetExhausted", "SearchPlan", "SetScorer", "find_smallest_heel", "search_heel", "search_with_transfer"]
