from __future__ import annotations

import io

import pytest
from sqlalchemy.engine import Engine

from callcenter.customers import CustomerDirectory, CustomerError, CustomerRepo, normalize_phone


@pytest.mark.parametrize(
    ("raw", "country", "expected"),
    [
        ("+49 30 123-4567", None, "+49301234567"),
        ("0049 (30) 1234567", None, "+49301234567"),
        ("030 1234567", "49", "+49301234567"),
        ("030 1234567", None, "0301234567"),
        ("sip:+8613812345678@pbx.example.com;user=phone", None, "+8613812345678"),
        ("tel:+1-201-555-0123", None, "+12015550123"),
        ("anonymous", None, None),
        ("alice", None, None),
        ("12", None, None),
        ("+1234567890123456", None, None),  # 16 digits: longer than E.164 allows
    ],
)
def test_normalize_phone(raw: str, country: str | None, expected: str | None) -> None:
    assert normalize_phone(raw, country_code=country) == expected


def test_a_number_written_two_ways_finds_one_customer(engine: Engine) -> None:
    repo = CustomerRepo(engine, country_code="49")
    added = repo.add("Ada", ["030 1234567"], email="Ada@Example.com", vip_level=3)
    found = repo.find(phone="+49 30 1234567")
    assert found is not None and found.id == added.id and found.email == "ada@example.com"
    with pytest.raises(CustomerError, match=r"phone \+49301234567 belongs to customer"):
        repo.add("Eve", ["+49301234567"])
    with pytest.raises(CustomerError, match="vip_level: expected 0-9"):
        repo.add("Max", vip_level=10)


async def test_lookup_gives_the_ivr_a_vip_flag(engine: Engine) -> None:
    repo = CustomerRepo(engine)
    repo.add("Ada", ["+4930111"], vip_level=2)
    repo.add("Bo", ["+4930222"])
    directory = CustomerDirectory(repo)
    ada = await directory.lookup("+4930111")
    bo = await directory.lookup("sip:+4930222@x")
    assert ada is not None and ada["vip"] is True and ada["name"] == "Ada"
    assert bo is not None and bo["vip"] is False
    assert await directory.lookup("+4930999") is None
    assert await directory.lookup("anonymous") is None


def test_csv_import_adds_updates_and_reports_bad_rows(engine: Engine) -> None:
    repo = CustomerRepo(engine)
    repo.add("Ada Old", ["+4930111"], external_id="crm-1")
    source = io.StringIO(
        "name,phones,email,vip_level,external_id\n"
        "Ada Lovelace,+4930111;+4930112,ada@example.com,5,crm-1\n"
        "Bo,+8613812345678,,0,\n"
        "Cy,not-a-number,,0,\n"
        "Di,+4930333,,eleven,\n"
    )
    result = repo.import_csv(source)
    assert (result.created, result.updated) == (1, 1)
    assert len(result.errors) == 2
    assert result.errors[0].startswith("line 4: phone 'not-a-number'")
    assert result.errors[1].startswith("line 5: vip_level")
    ada = repo.find(phone="+4930112")
    assert ada is not None and ada.name == "Ada Lovelace" and ada.vip_level == 5
    assert repo.count() == 2


def test_csv_with_an_unknown_column_is_refused_whole(engine: Engine) -> None:
    with pytest.raises(CustomerError, match="unknown column"):
        CustomerRepo(engine).import_csv(io.StringIO("name,fax\nAda,123\n"))
