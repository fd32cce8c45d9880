"""Live flow publishing end to end (issue 5, "Live and reloadable"): a real `callcenter serve`, SIPp
callers, the flows folder and the `/api/flows` admin API.

A new version (a changed file or an API publish) serves new calls only; a call keeps the version it
started with; an invalid file is refused with its position and the old version stays live; every
version is kept with its author and can be rolled back. The path a call took (`ivr_path` in
`calls list --json`) tells which version served it: v1 and v2 use different node ids.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from callcenter.testing.server import ServerProcess, StartServer
from callcenter.testing.sipp import SippResult, run_sipp

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("sipp")]

FLOW_ID = "reload_demo"
NUMBER = "300"
TOKEN = "e2e-admin-token-0123456789"


def flow_text(tag: str, timeout_s: float = 1) -> str:
    """A flow whose node ids carry `tag`: a menu nobody answers (the SIPp caller sends no audio), then
    a goodbye and the server hangs up, so the call's path is `[<tag>_menu, <tag>_bye]`."""
    return f"""\
id: {FLOW_ID}
language: en-US
start: {tag}_menu
nodes:
  {tag}_menu:
    type: menu
    prompt: Version {tag}. Press 1.
    options:
      - {{dtmf: "1", next: {tag}_chosen}}
    timeout_s: {timeout_s}
    retries: 0
    on_failure: {tag}_bye
  {tag}_chosen:
    type: hangup
    reason: {tag}_chosen
  {tag}_bye:
    type: hangup
    prompt: Goodbye.
    reason: {tag}_timeout
"""


V1_PATH = ["v1_menu", "v1_bye"]
V2_PATH = ["v2_menu", "v2_bye"]


def replace_file(path: Path, text: str) -> None:
    """Write `path` atomically (as editors and deploy tools do), so the watcher never reads half a file."""
    tmp = path.parent.parent / f".{path.name}.tmp"  # outside the flows folder, same file system
    tmp.write_text(text)
    os.replace(tmp, path)


def start(start_server: StartServer, tmp_path: Path, text: str, **env: Any) -> tuple[ServerProcess, Path]:
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / f"{FLOW_ID}.yaml").write_text(text)
    server = start_server(
        CALLCENTER_IVR_FLOWS_DIR=str(flows),
        CALLCENTER_IVR_NUMBERS=f"{NUMBER}={FLOW_ID}",
        CALLCENTER_IVR_RELOAD_INTERVAL_S=0.2,
        CALLCENTER_MEDIA_RTP_TIMEOUT_S=60,  # the SIPp caller sends no RTP at all
        CALLCENTER_LOG_LEVEL="debug",  # for ivr_started
        **{"CALLCENTER_HTTP_ADMIN_TOKEN": TOKEN, **env},  # every API route needs credentials
    )
    return server, flows / f"{FLOW_ID}.yaml"


def call(server: ServerProcess, workdir: Path) -> SippResult:
    """One call to the flow's number that ends when the server hangs up (uac_server_bye.xml)."""
    return run_sipp(
        f"127.0.0.1:{server.sip_port}",
        workdir,
        scenario="uac_server_bye.xml",
        extra=["-s", NUMBER],
        timeout_s=30,
    )


def one_call(server: ServerProcess, workdir: Path) -> dict[str, Any]:
    """Place a call, check SIPp saw it end normally, return its call record."""
    before = {c["sip_call_id"] for c in server.calls()}
    result = call(server, workdir)
    assert result.successful == 1 and result.failed == 0, result.errors
    (record,) = server.new_calls(before, 1)
    return record


def api(
    server: ServerProcess,
    method: str,
    path: str,
    body: str | dict[str, Any] | None = None,
    token: str | None = TOKEN,
) -> tuple[int, Any]:
    """(status, JSON body) of an HTTP request to the server's API."""
    data = None
    if body is not None:
        data = (json.dumps(body) if isinstance(body, dict) else body).encode("utf-8")
    request = urllib.request.Request(f"http://127.0.0.1:{server.http_port}{path}", data=data, method=method)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def live_version(server: ServerProcess) -> int:
    status, body = api(server, "GET", f"/api/flows/{FLOW_ID}")
    assert status == 200, body
    return int(body["version"])


def test_a_call_in_progress_keeps_its_version_while_a_changed_file_serves_the_next_call(
    start_server: StartServer, tmp_path: Path
) -> None:
    # v1's menu waits long enough for the file to change and the watcher to publish v2 meanwhile.
    server, path = start(start_server, tmp_path, flow_text("v1", timeout_s=5))
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(call, server, tmp_path / "sipp1")
        started = server.wait_for_event("ivr_started", timeout=15, flow=FLOW_ID)
        replace_file(path, flow_text("v2"))
        server.wait_for_event("flow_published", timeout=10, flow_id=FLOW_ID, version=2, source="file")
        server.wait_for_event("flow_live", timeout=15, flow=FLOW_ID, version=2)
        # The change landed while the first call was still in v1's menu (else this test proves nothing).
        assert not first.done() and not server.events("call_ended", call_id=started["call_id"])
        result = first.result(timeout=40)
    assert result.successful == 1 and result.failed == 0, result.errors
    (old,) = server.new_calls(set(), 1)
    assert old["ivr_path"] == V1_PATH and old["ivr_reason"] == "v1_timeout"

    new = one_call(server, tmp_path / "sipp2")
    assert new["flow"] == FLOW_ID
    assert new["ivr_path"] == V2_PATH and new["ivr_reason"] == "v2_timeout"
    assert not server.events("call_error") and not server.events("call_crashed")


def test_an_invalid_file_is_refused_with_its_position_and_the_old_version_stays_live(
    start_server: StartServer, tmp_path: Path
) -> None:
    server, path = start(start_server, tmp_path, flow_text("v1"))
    broken = flow_text("v2").replace("on_failure: v2_bye", "on_failure: nowhere")
    replace_file(path, broken)
    rejected = server.wait_for_event("flow_rejected", timeout=10, flow_id=FLOW_ID, source="file")
    # file:line:column of the bad target (line 12, after "on_failure: ") and the node it is in
    assert rejected["errors"] == [f"{path}:12:17: node v2_menu: unknown target 'nowhere'"], rejected
    assert live_version(server) == 1

    record = one_call(server, tmp_path / "sipp1")
    assert record["ivr_path"] == V1_PATH
    # Judged once: the broken file is not re-reported on every poll while it stays unchanged.
    assert len(server.events("flow_rejected", flow_id=FLOW_ID)) == 1

    # The API refuses to publish for a token the server does not know, whatever the caller sends.
    status, body = api(server, "PUT", f"/api/flows/{FLOW_ID}", flow_text("v2"), token="a-guess-at-the-token")
    assert status == 401, body
    assert live_version(server) == 1

    # Fixing the file makes it live: the watcher kept going after the refusal.
    replace_file(path, flow_text("v2"))
    server.wait_for_event("flow_published", timeout=10, flow_id=FLOW_ID, version=2)
    assert live_version(server) == 2


def test_publish_and_rollback_through_the_api_with_the_admin_token(
    start_server: StartServer, tmp_path: Path
) -> None:
    server, path = start(start_server, tmp_path, flow_text("v1"))
    url = f"/api/flows/{FLOW_ID}"

    for token in (None, "not-the-admin-token-at-all"):
        status, _ = api(server, "PUT", url, flow_text("v2"), token=token)
        assert status == 401
    status, body = api(server, "PUT", f"{url}?author=alice&message=v2", flow_text("v2"), token=TOKEN)
    assert (status, body) == (200, {"id": FLOW_ID, "version": 2, "changed": True})
    status, versions = api(server, "GET", f"{url}/versions")
    assert status == 200
    assert [(v["version"], v["author"], v["source"]) for v in versions] == [
        (1, "file", "file"),
        (2, "alice", "api"),
    ]
    assert path.read_text() == flow_text("v2")  # published versions are written back to their file
    server.wait_for_event("flow_live", timeout=15, flow=FLOW_ID, version=2)
    assert one_call(server, tmp_path / "sipp1")["ivr_path"] == V2_PATH

    status, body = api(server, "POST", f"{url}/rollback", {"version": 1}, token=None)
    assert status == 401
    status, body = api(server, "POST", f"{url}/rollback", {"version": 1, "author": "bob"}, token=TOKEN)
    assert (status, body) == (200, {"id": FLOW_ID, "version": 3, "changed": True})
    assert one_call(server, tmp_path / "sipp2")["ivr_path"] == V1_PATH

    status, versions = api(server, "GET", f"{url}/versions")
    assert status == 200
    # A rollback is a new version; the watcher seeing the file the server itself wrote adds none.
    assert [(v["version"], v["author"], v["source"], v["rolled_back_from"]) for v in versions] == [
        (1, "file", "file", None),
        (2, "alice", "api", None),
        (3, "bob", "rollback", 1),
    ]
    assert path.read_text() == flow_text("v1")


def test_flows_publish_from_the_cli_reaches_the_running_server_once(
    start_server: StartServer, tmp_path: Path
) -> None:
    server, path = start(start_server, tmp_path, flow_text("v1"))
    draft = tmp_path / "draft.yaml"
    draft.write_text(flow_text("v2"))
    # Another process: it stores the version in the shared database and writes the flows folder.
    done = server.cli("flows", "publish", str(draft), "--author", "carol", "-m", "new menu")
    assert "version 2 is live" in done.stdout
    server.wait_for_event("flow_published", timeout=10, flow_id=FLOW_ID, version=2, author="carol")
    assert one_call(server, tmp_path / "sipp1")["ivr_path"] == V2_PATH
    status, versions = api(server, "GET", f"/api/flows/{FLOW_ID}/versions")
    assert status == 200
    # The server's watcher made the CLI's version live without storing the same text again.
    assert [(v["version"], v["author"], v["source"], v["message"]) for v in versions] == [
        (1, "file", "file", "loaded from file"),
        (2, "carol", "cli", "new menu"),
    ]
    assert path.read_text() == flow_text("v2")


def test_a_server_restarts_on_the_last_good_version_while_a_refused_file_is_on_disk(
    start_server: StartServer, tmp_path: Path
) -> None:
    server, path = start(start_server, tmp_path, flow_text("v1"))
    replace_file(path, flow_text("v2").replace("on_failure: v2_bye", "on_failure: nowhere"))
    server.wait_for_event("flow_rejected", timeout=10, flow_id=FLOW_ID, source="file")
    server.stop()
    server.start()  # same data folder and database; the broken file is still there
    assert live_version(server) == 1
    assert one_call(server, tmp_path / "sipp1")["ivr_path"] == V1_PATH
