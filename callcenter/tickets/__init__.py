"""Tickets: statuses as a transition table, the SQL repository, extractive summaries, and the service
the IVR and the post-call hook use."""

from callcenter.tickets.repo import TicketDetail, TicketError, TicketNotFound, TicketRepo, ticket_public
from callcenter.tickets.service import HandledCall, TicketService, Turn, is_resolved, wants_ticket
from callcenter.tickets.states import STATUSES, TRANSITIONS, InvalidTransition, check_transition

__all__ = [
    "STATUSES",
    "TRANSITIONS",
    "HandledCall",
    "InvalidTransition",
    "TicketDetail",
    "TicketError",
    "TicketNotFound",
    "TicketRepo",
    "TicketService",
    "Turn",
    "check_transition",
    "is_resolved",
    "ticket_public",
    "wants_ticket",
]
