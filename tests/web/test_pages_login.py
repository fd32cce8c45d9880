"""Logging in through the browser: each role lands on its page, sees only its links, and cannot open
the others; a one-time password must be changed first; the session survives a reload and ends at
log-out."""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.e2e

PASSWORD = "correct-horse-battery"  # conftest.PASSWORD


def test_each_role_lands_on_its_page_and_sees_only_its_links(
    start_web: Any, new_page: Any, log_in: Any
) -> None:
    server = start_web()
    homes = {
        "ada": ("/admin", ["Admin", "Prompts", "Wallboard", "Agent", "Chats"]),
        "sue": ("/wallboard", ["Wallboard", "Agent", "Chats", "Prompts"]),
        "sam": ("/agent", ["Agent", "Chats"]),
    }
    for user, (home, links) in homes.items():
        page = new_page(server)
        log_in(page, user)
        expect(page).to_have_url(re.compile(f"{home}$"))
        expect(page.locator("#who")).to_have_text(re.compile(f"^{user} "))
        expect(page.locator("#nav a")).to_have_text(links)
    page.locator("#nav a", has_text="Chats").click()  # the agent's chat inbox is one click away
    expect(page).to_have_url(re.compile("/agent/chats$"))
    expect(page.locator("#nav a.current")).to_have_text("Chats")


def test_a_page_asks_for_a_login_then_opens_and_other_roles_are_refused(
    start_web: Any, new_page: Any, log_in: Any
) -> None:
    server = start_web()
    page = new_page(server)
    page.goto("/wallboard")
    expect(page).to_have_url(re.compile(r"/\?next=/wallboard"))
    page.fill("#username", "sue")
    page.fill("#password", PASSWORD)
    page.click("#login-button")
    expect(page).to_have_url(re.compile("/wallboard$"))
    page.reload()  # the HttpOnly cookie keeps the session
    expect(page.locator("#who")).to_have_text(re.compile("^sue "))

    page.goto("/admin")  # a supervisor is not an admin
    expect(page).to_have_url(re.compile(r"/\?next=/admin&why=role"))
    expect(page.locator("#notice")).to_contain_text("needs another role")
    expect(page.locator("#choices a")).to_have_text(["Wallboard", "Agent", "Chats", "Prompts"])

    page.click("#choices button")  # log out
    expect(page.locator("#login-form")).to_be_visible()
    page.goto("/wallboard")
    expect(page).to_have_url(re.compile(r"/\?next=/wallboard"))


def test_a_wrong_password_is_refused_with_a_message(start_web: Any, new_page: Any, log_in: Any) -> None:
    server = start_web()
    page = new_page(server)
    log_in(page, "sam", "not-the-password")
    expect(page.locator("#error")).to_have_text("Wrong username or password.")
    expect(page).to_have_url(re.compile(r"/$"))


def test_a_one_time_password_must_be_changed_before_anything_else(
    start_web: Any, new_page: Any, log_in: Any
) -> None:
    server = start_web()
    out = server.cli("users", "add", "tia", "--role", "supervisor").stdout
    one_time = re.search(r"one-time password[^:]*: (\S+)", out)
    assert one_time, out
    page = new_page(server)
    log_in(page, "tia", one_time.group(1), path="/wallboard")
    expect(page.locator("#change-form")).to_be_visible()
    page.goto("/wallboard")  # not yet: the page sends the user back to change it
    expect(page.locator("#change-form")).to_be_visible()
    page.fill("#current", one_time.group(1))  # after a reload the page no longer holds it
    page.fill("#new-password", "a-brand-new-secret")
    page.fill("#repeat-password", "a-different-secret")
    page.click("#change-button")
    expect(page.locator("#error")).to_have_text("The two new passwords differ.")
    page.fill("#repeat-password", "a-brand-new-secret")
    page.click("#change-button")
    expect(page).to_have_url(re.compile("/wallboard$"))

    again = new_page(server)
    log_in(again, "tia", one_time.group(1))
    expect(again.locator("#error")).to_have_text("Wrong username or password.")
    log_in(again, "tia", "a-brand-new-secret")
    expect(again).to_have_url(re.compile("/wallboard$"))
