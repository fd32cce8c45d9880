"""Tickets: statuses as a transition table, the SQL repository, extractive summaries, and the service
the IVR and the post-call hook use."""

from callcenter.tickets.csat import CsatAnswer, survey_answer
from callcenter.tickets.repo import (
    CsatAverage,
    TicketDetail,
    TicketError,
    TicketFilter,
    TicketNotFound,
    TicketRepo,
    ticket_public,
)
from callcenter.tickets.service import HandledCall, TicketService, Turn, is_resolved, wants_ticket
from callcenter.tickets.sla import BusinessCalendar, SlaEvent, SlaMonitor, SlaPolicy
from callcenter.tickets.states import STATUSES, TRANSITIONS, InvalidTransition, check_transition

__all__ = [
    "STATUSES",
    "TRANSITIONS",
    "BusinessCalendar",
    "CsatAnswer",
    "CsatAverage",
    "HandledCall",
    "InvalidTransition",
    "SlaEvent",
    "SlaMonitor",
    "SlaPolicy",
    "TicketDetail",
    "TicketError",
    "TicketFilter",
    "TicketNotFound",
    "TicketRepo",
    "TicketService",
    "Turn",
    "check_transition",
    "is_resolved",
    "survey_answer",
    "ticket_public",
    "wants_ticket",
]
