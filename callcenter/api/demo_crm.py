"""A tiny demo CRM the server ships, so the sample hotline's "order status" branch works out of the box.

`GET /api/demo/orders/{number}` → `{"order": ..., "status": ..., "eta": ... | null}` for the sample orders
below, 404 for any other number. A real deployment points the flow's `http` node at its own CRM.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException

router = APIRouter(prefix="/api/demo", tags=["demo"])

# Order number → (status as a caller should hear it, delivery date or None).
SAMPLE_ORDERS: dict[str, tuple[str, str | None]] = {
    "1001": ("on its way", "Tuesday"),
    "1002": ("being packed", "Friday"),
    "1003": ("delivered", None),
    "1004": ("waiting for payment", None),
    "12345": ("on its way", "Monday"),
}


@router.get("/orders/{number}")
def demo_order(number: str) -> dict[str, Any]:
    """The status of one of the sample orders (1001-1004, 12345)."""
    if not number.isascii() or not number.isdigit() or len(number) > 20:
        raise HTTPException(status_code=400, detail="an order number is digits only")
    found = SAMPLE_ORDERS.get(number)
    if found is None:
        raise HTTPException(status_code=404, detail=f"no order {number}")
    status, eta = found
    return {"order": number, "status": status, "eta": eta}
