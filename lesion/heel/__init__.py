"""The smallest heel lesion can find (``lesion search``): a multi-signal candidate pool,
greedy selection, O(n) pruning and a certificate; :mod:`.minimal` answers the same question
exhaustively for small pools. The search is anytime (a row or time budget, or an interrupt,
returns the best set so far) and resumable from its :class:`SetJournal`."""
from .algorithms import SearchPlan, find_smallest_heel
from .journal import SetJournal, journal_path
from ..errors import BudgetExhausted
from .scorer import SetScorer
from .search import search_heel, search_with_transfer

__all__ = ["BudgetExhausted", "SearchPlan", "SetJournal", "SetScorer", "find_smallest_heel", "journal_path",
           "search_heel", "search_with_transfer"]
