"""Customers: phone numbers normalised for caller-ID lookup, CSV import, and the IVR's ``Customers``.

Numbers are stored E.164-ish: ``+`` and digits when the country is known (``+4930123456``), else the
digits as dialled. A national number (one leading 0) becomes international when a country calling code
is configured (``tickets.phone_country_code``), so ``030 123456`` and ``+49 30 123456`` are one number.
"""

from __future__ import annotations

import asyncio
import csv
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from callcenter.core.errors import CallcenterError
from callcenter.store.crm import Customer, CustomerPhone
from callcenter.store.db import utcnow

__all__ = [
    "CSV_FIELDS",
    "CustomerDirectory",
    "CustomerConflict",
    "CustomerError",
    "CustomerNotFound",
    "CustomerRepo",
    "ImportResult",
    "customer_public",
    "normalize_phone",
]

_SEPARATORS = re.compile(r"[\s().\-/]")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
CSV_FIELDS = ("name", "phones", "email", "wechat_openid", "vip_level", "external_id")


class CustomerError(CallcenterError, ValueError):
    """A customer's fields are not acceptable, or they clash with another customer's."""


class CustomerConflict(CustomerError):
    """A phone number, OpenID or CRM id that belongs to another customer."""


class CustomerNotFound(CustomerError, LookupError):
    """No customer with that id."""


def normalize_phone(raw: str, *, country_code: str | None = None) -> str | None:
    """``raw`` (a caller ID, a SIP/tel URI user part, or a number as people write it) as stored, or
    None when it is no phone number (``anonymous``, a name, too short or too long for E.164)."""
    text = raw.strip()
    for scheme in ("sip:", "sips:", "tel:"):
        if text.lower().startswith(scheme):
            text = text[len(scheme) :]
    text = text.split("@", 1)[0].split(";", 1)[0]  # user part, no parameters (RFC 3966 §3)
    text = _SEPARATORS.sub("", text)
    plus = text.startswith("+")
    digits = text[1:] if plus else text
    if not digits.isdigit() or not digits.isascii():
        return None
    if not plus and digits.startswith("00"):
        plus, digits = True, digits[2:]  # international prefix used across Europe and China
    elif not plus and country_code and digits.startswith("0"):
        plus, digits = True, country_code + digits[1:]
    # E.164 §6.1: at most 15 digits; fewer than 3 is an extension or a mistake, not a customer's number.
    if not 3 <= len(digits) <= 15:
        return None
    return "+" + digits if plus else digits


@dataclass
class ImportResult:
    created: int = 0
    updated: int = 0
    errors: list[str] = field(default_factory=list)  # "line N: what is wrong"


def customer_public(customer: Customer, phones: Sequence[str]) -> dict[str, Any]:
    return {
        "id": customer.id,
        "name": customer.name,
        "phones": list(phones),
        "email": customer.email,
        "wechat_openid": customer.wechat_openid,
        "vip_level": customer.vip_level,
        "vip": customer.vip_level > 0,
        "external_id": customer.external_id,
        "created_at": customer.created_at.isoformat(),
    }


class CustomerRepo:
    """Synchronous customer queries (the CLI; the server calls them from worker threads)."""

    def __init__(self, engine: Engine, *, country_code: str | None = None) -> None:
        self.engine = engine
        self.country_code = country_code

    def normalize(self, raw: str) -> str | None:
        return normalize_phone(raw, country_code=self.country_code)

    def _numbers(self, phones: Iterable[str]) -> list[str]:
        out: list[str] = []
        for raw in phones:
            if not raw.strip():
                continue
            number = self.normalize(raw)
            if number is None:
                raise CustomerError(f"phone {raw!r}: expected a phone number such as +4930123456")
            if number not in out:
                out.append(number)
        return out

    # -- inside a caller's session (tickets use these in their own transaction) -------------------------

    def find_in(
        self, session: Session, *, phone: str | None = None, openid: str | None = None
    ) -> Customer | None:
        if phone:
            number = self.normalize(phone)
            if number is None:
                return None
            query = select(Customer).join(CustomerPhone).where(CustomerPhone.number == number)
            return session.exec(query).first()
        if openid:
            return session.exec(select(Customer).where(Customer.wechat_openid == openid)).first()
        return None

    def create_in(self, session: Session, phones: Sequence[str] = (), **fields: Any) -> Customer:
        """Insert a customer and its (already normalised) numbers; flushed, not committed."""
        customer = Customer.model_validate(fields)
        session.add(customer)
        session.flush()
        assert customer.id is not None
        for number in phones:
            session.add(CustomerPhone(customer_id=customer.id, number=number))
        session.flush()
        return customer

    @staticmethod
    def phones_in(session: Session, customer_id: int) -> list[str]:
        query = select(CustomerPhone.number).where(CustomerPhone.customer_id == customer_id)
        return list(session.exec(query.order_by(col(CustomerPhone.id))))

    # -- standalone ----------------------------------------------------------------------------------------

    def add(
        self,
        name: str = "",
        phones: Sequence[str] = (),
        *,
        email: str | None = None,
        wechat_openid: str | None = None,
        vip_level: int = 0,
        external_id: str | None = None,
    ) -> Customer:
        fields = self._fields(name, email, wechat_openid, vip_level, external_id)
        numbers = self._numbers(phones)
        with Session(self.engine, expire_on_commit=False) as session:
            self._check_free(session, numbers, fields)
            customer = self.create_in(session, numbers, **fields)
            try:
                session.commit()
            except IntegrityError as exc:  # lost a race with another writer
                raise CustomerConflict(f"customer clashes with another one: {exc.orig}") from None
            return customer

    def update(
        self,
        customer_id: int,
        *,
        name: str | None = None,
        phones: Sequence[str] | None = None,
        email: str | None = None,
        wechat_openid: str | None = None,
        vip_level: int | None = None,
        external_id: str | None = None,
        clear: Sequence[str] = (),
    ) -> tuple[Customer, list[str]]:
        """Change the given fields (``phones`` replaces the numbers; ``clear`` names fields to empty:
        email, wechat_openid, external_id). Raises CustomerNotFound, CustomerConflict, CustomerError."""
        with Session(self.engine, expire_on_commit=False) as session:
            customer = session.get(Customer, customer_id)
            if customer is None:
                raise CustomerNotFound(f"no customer {customer_id}")
            current = {
                "name": customer.name, "email": customer.email, "wechat_openid": customer.wechat_openid,
                "vip_level": customer.vip_level, "external_id": customer.external_id,
            }  # fmt: skip
            given = {
                "name": name, "email": email, "wechat_openid": wechat_openid, "vip_level": vip_level,
                "external_id": external_id,
            }  # fmt: skip
            merged: dict[str, Any] = {k: (v if v is not None else current[k]) for k, v in given.items()}
            for key in clear:
                if key not in ("email", "wechat_openid", "external_id"):
                    raise CustomerError(f"{key}: only email, wechat_openid and external_id can be cleared")
                merged[key] = None
            fields = self._fields(**merged)
            numbers = self._numbers(phones) if phones is not None else None
            self._check_free(session, numbers or (), fields, own_id=customer_id)
            for key, value in fields.items():
                setattr(customer, key, value)
            customer.updated_at = utcnow()
            session.add(customer)
            if numbers is not None:
                have = {p.number: p for p in session.exec(
                    select(CustomerPhone).where(CustomerPhone.customer_id == customer_id)
                )}  # fmt: skip
                for number, row in have.items():
                    if number not in numbers:
                        session.delete(row)
                session.flush()
                for number in numbers:
                    if number not in have:
                        session.add(CustomerPhone(customer_id=customer_id, number=number))
            try:
                session.commit()
            except IntegrityError as exc:
                raise CustomerConflict(f"customer clashes with another one: {exc.orig}") from None
            return customer, self.phones_in(session, customer_id)

    def count_matching(self, search: str | None = None) -> int:
        """How many customers ``list_customers(search=...)`` would page through."""
        with Session(self.engine) as session:
            query = select(func.count()).select_from(Customer)
            if search:
                query = query.where(self._search(search))
            return int(session.exec(query).one())

    def _search(self, search: str) -> Any:
        like = f"%{search.lower()}%"
        number = self.normalize(search)
        by_phone = select(CustomerPhone.customer_id).where(CustomerPhone.number == (number or search.strip()))
        return (
            func.lower(Customer.name).like(like)
            | func.lower(col(Customer.email)).like(like)
            | col(Customer.id).in_(by_phone)
        )

    @staticmethod
    def _fields(
        name: str, email: str | None, wechat_openid: str | None, vip_level: int, external_id: str | None
    ) -> dict[str, Any]:
        if isinstance(vip_level, bool) or not isinstance(vip_level, int) or not 0 <= vip_level <= 9:
            raise CustomerError(f"vip_level: expected 0-9, got {vip_level!r}")
        if email and not _EMAIL.fullmatch(email.strip()):
            raise CustomerError(f"email {email!r}: expected an address such as name@example.com")
        if len(name) > 200:
            raise CustomerError("name: expected at most 200 characters")
        return {
            "name": name.strip(),
            "email": email.strip().lower() if email and email.strip() else None,
            "wechat_openid": wechat_openid.strip() if wechat_openid and wechat_openid.strip() else None,
            "vip_level": vip_level,
            "external_id": external_id.strip() if external_id and external_id.strip() else None,
        }

    def _check_free(
        self,
        session: Session,
        numbers: Sequence[str],
        fields: Mapping[str, Any],
        *,
        own_id: int | None = None,
    ) -> None:
        for number in numbers:
            owner = session.exec(
                select(CustomerPhone.customer_id).where(CustomerPhone.number == number)
            ).first()
            if owner is not None and owner != own_id:
                raise CustomerConflict(f"phone {number} belongs to customer {owner}")
        for key in ("wechat_openid", "external_id"):
            if fields.get(key):
                query = select(Customer.id).where(getattr(Customer, key) == fields[key])
                owner = session.exec(query).first()
                if owner is not None and owner != own_id:
                    raise CustomerConflict(f"{key} {fields[key]!r} belongs to customer {owner}")

    def get(self, customer_id: int) -> tuple[Customer, list[str]] | None:
        with Session(self.engine, expire_on_commit=False) as session:
            customer = session.get(Customer, customer_id)
            return (customer, self.phones_in(session, customer_id)) if customer is not None else None

    def find(self, *, phone: str | None = None, openid: str | None = None) -> Customer | None:
        with Session(self.engine, expire_on_commit=False) as session:
            return self.find_in(session, phone=phone, openid=openid)

    def list_customers(
        self, *, limit: int = 50, offset: int = 0, search: str | None = None
    ) -> list[tuple[Customer, list[str]]]:
        """Customers by id, each with its numbers; ``search`` matches name, email or a number."""
        with Session(self.engine, expire_on_commit=False) as session:
            query = select(Customer)
            if search:
                query = query.where(self._search(search))
            rows = list(session.exec(query.order_by(col(Customer.id)).offset(offset).limit(limit)))
            return [(c, self.phones_in(session, c.id or 0)) for c in rows]

    def count(self) -> int:
        with Session(self.engine) as session:
            return int(session.exec(select(func.count()).select_from(Customer)).one())

    def import_csv(self, source: TextIO) -> ImportResult:
        """Customers from CSV with a header row naming some of :data:`CSV_FIELDS` (``phones``: numbers
        separated by ``;``). A row whose external_id, a phone number or email matches a customer
        updates it; others are added. Bad rows are reported by line and skipped; good ones are kept."""
        result = ImportResult()
        reader = csv.DictReader(source)
        unknown = [f for f in reader.fieldnames or () if f not in CSV_FIELDS]
        if not reader.fieldnames or unknown:
            raise CustomerError(
                f"CSV header: unknown column(s) {', '.join(unknown)}; "
                f"expected some of {', '.join(CSV_FIELDS)}"
                if unknown
                else "CSV: no header row"
            )
        for row in reader:
            line = reader.line_num
            try:
                self._import_row(row, result)
            except CustomerError as exc:
                result.errors.append(f"line {line}: {exc}")
        return result

    def _import_row(self, row: Mapping[str, str | None], result: ImportResult) -> None:
        def get(key: str) -> str:
            return (row.get(key) or "").strip()

        level_text = get("vip_level") or "0"
        if not level_text.isdigit():
            raise CustomerError(f"vip_level: expected 0-9, got {level_text!r}")
        fields = self._fields(
            get("name"), get("email") or None, get("wechat_openid") or None, int(level_text),
            get("external_id") or None,
        )  # fmt: skip
        numbers = self._numbers(get("phones").split(";"))
        with Session(self.engine, expire_on_commit=False) as session:
            existing = self._match(session, fields, numbers)
            if existing is None:
                self._check_free(session, numbers, fields)
                self.create_in(session, numbers, **fields)
                result.created += 1
            else:
                assert existing.id is not None
                self._check_free(session, numbers, fields, own_id=existing.id)
                for key, value in fields.items():
                    if value not in (None, "") or key == "vip_level":
                        setattr(existing, key, value)
                existing.updated_at = utcnow()
                have = set(self.phones_in(session, existing.id))
                for number in numbers:
                    if number not in have:
                        session.add(CustomerPhone(customer_id=existing.id, number=number))
                result.updated += 1
            try:
                session.commit()
            except IntegrityError as exc:
                raise CustomerConflict(f"clashes with another customer: {exc.orig}") from None

    @staticmethod
    def _match(session: Session, fields: Mapping[str, Any], numbers: Sequence[str]) -> Customer | None:
        if fields.get("external_id"):
            found = session.exec(
                select(Customer).where(Customer.external_id == fields["external_id"])
            ).first()
            if found is not None:
                return found
        for number in numbers:
            found = session.exec(
                select(Customer).join(CustomerPhone).where(CustomerPhone.number == number)
            ).first()
            if found is not None:
                return found
        if fields.get("email"):
            return session.exec(select(Customer).where(Customer.email == fields["email"])).first()
        return None


class CustomerDirectory:
    """The IVR's ``Customers`` service: caller ID → the customer (VIP flag for priority routing)."""

    def __init__(self, repo: CustomerRepo) -> None:
        self.repo = repo

    def _lookup(self, caller: str) -> dict[str, Any] | None:
        with Session(self.repo.engine, expire_on_commit=False) as session:
            customer = self.repo.find_in(session, phone=caller)
            if customer is None or customer.id is None:
                return None
            return customer_public(customer, self.repo.phones_in(session, customer.id))

    async def lookup(self, caller: str) -> Mapping[str, Any] | None:
        if self.repo.normalize(caller) is None:
            return None
        return await asyncio.to_thread(self._lookup, caller)
