"""CSAT: the answer to a flow's ``survey`` node, as the post-call hook stores it (a ``feedback`` row).

The flow keeps the answer in the variable the survey names (``into``, default ``csat``) on its own scale
(2-9 points, default 5). Feedback rows hold the usual 1-5 scale, so other scales are mapped linearly
(a 3-point answer 1/2/3 becomes 1/3/5; a 9-point 7 becomes 4).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from callcenter.ivr.schema import Flow, SurveyNode

__all__ = ["CsatAnswer", "survey_answer"]


@dataclass(frozen=True)
class CsatAnswer:
    score: int  # as the caller gave it, 1..scale
    scale: int = 5

    @property
    def five_point(self) -> int:
        """The answer on the 1-5 scale (half-way values round up)."""
        if self.scale == 5:
            return self.score
        return int(1 + (self.score - 1) * 4 / (self.scale - 1) + 0.5)


def _valid(value: Any, scale: int) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | str):
        return None
    text = str(value).strip()
    if not text.isdigit():
        return None
    number = int(text)
    return number if 1 <= number <= scale else None


def survey_answer(flow: Flow, variables: Mapping[str, Any], path: Sequence[str] = ()) -> CsatAnswer | None:
    """The survey answer of a call that ran ``flow``: the last survey node visited (``path``: the
    result's ``ivr_path``) with a valid answer in its variable. Without a path, any survey node of the
    flow. A survey in a subflow (the flow has none of its own) is found by its variable only when that is
    the default ``csat`` on 5 points: the subflow's node is not at hand here."""
    surveys = {nid: n for nid, n in flow.nodes.items() if isinstance(n, SurveyNode)}
    visited = [surveys[nid] for nid in reversed(path) if nid in surveys] if path else list(surveys.values())
    for node in visited:
        score = _valid(variables.get(node.into), node.scale)
        if score is not None:
            return CsatAnswer(score, node.scale)
    if not surveys and any("/" in step for step in path):  # the survey ran in a subflow
        score = _valid(variables.get("csat"), 5)
        if score is not None:
            return CsatAnswer(score, 5)
    return None
