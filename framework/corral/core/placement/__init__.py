"""Placement: a pure plan of which pending tasks go on which offered agents.

``place(pending, offers, facts) -> Plan`` is the whole interface; see ``stack`` for the
order of the steps, ``checks`` for the feasibility checkers and their veto reasons, and
``rank`` for the scoring.
"""

from corral.core.placement.stack import place
from corral.core.placement.types import (
    Assignment,
    JobFacts,
    PendingTask,
    PlacementFacts,
    Plan,
    Veto,
)

__all__ = ["Assignment", "JobFacts", "PendingTask", "PlacementFacts", "Plan", "Veto", "place"]
