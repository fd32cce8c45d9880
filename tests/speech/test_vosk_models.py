"""Vosk model install/list/remove against a local HTTP server serving a zip built by the test."""

from __future__ import annotations

import hashlib
import io
import json
import os
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from callcenter.speech import models
from callcenter.speech.models import ModelInstallError

NAME = "vosk-model-small-xx-0.1"


def build_zip(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for name, data in entries.items():
            z.writestr(name, data)
    return buf.getvalue()


MODEL_FILES = {
    f"{NAME}/am/final.mdl": bytes(range(256)) * 1200,  # ~300 KB: several download chunks
    f"{NAME}/conf/model.conf": b"--min-active=200\n",
    f"{NAME}/conf/mfcc.conf": b"--use-energy=false\n",
    f"{NAME}/README": b"test model\n",
}


class Server:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.cut_after: int | None = None  # drop the connection after this many body bytes (once)
        self.honor_range = True
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                rng = self.headers.get("Range")
                outer.requests.append((self.path, rng))
                data = outer.files.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                start = 0
                if rng and outer.honor_range:
                    start = int(rng.removeprefix("bytes=").split("-")[0])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if outer.cut_after is not None and self.path.endswith(".zip"):
                    n, outer.cut_after = outer.cut_after, None
                    self.wfile.write(body[:n])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/vosk/models"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.01,), daemon=True)
        self.thread.start()

    def publish(self, name: str, zip_bytes: bytes, **extra: object) -> None:
        entry = {"lang": "xx", "lang_text": "Test", "name": name, "obsolete": "false",
                 "size": len(zip_bytes), "size_text": "1MiB", "type": "small", "version": "0.1",
                 "url": f"{self.url}/{name}.zip", "md5": hashlib.md5(zip_bytes).hexdigest()}
        entry.update(extra)
        catalog = json.loads(self.files.get("/vosk/models/model-list.json", b"[]"))
        catalog = [e for e in catalog if e["name"] != name] + [entry]
        self.files["/vosk/models/model-list.json"] = json.dumps(catalog).encode()
        self.files[f"/vosk/models/{name}.zip"] = zip_bytes

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.close()


@pytest.fixture
def model_zip(server: Server) -> bytes:
    z = build_zip(MODEL_FILES)
    server.publish(NAME, z)
    return z


def test_catalog(server: Server, model_zip: bytes) -> None:
    server.publish("vosk-model-old-0.0", b"x", obsolete="true", size="12")
    server.files["/vosk/models/model-list.json"] = server.files["/vosk/models/model-list.json"].replace(
        b"]", b', {"name": "../evil"}, "junk"]')
    cat = {e.name: e for e in models.fetch_catalog(server.url)}
    assert set(cat) == {NAME, "vosk-model-old-0.0"}  # unsafe and malformed entries dropped
    e = cat[NAME]
    assert (e.size, e.lang, e.obsolete, e.md5) == (len(model_zip), "xx", False,
                                                    hashlib.md5(model_zip).hexdigest())
    assert cat["vosk-model-old-0.0"].obsolete and cat["vosk-model-old-0.0"].size == 12


def test_install_list_remove(server: Server, model_zip: bytes, tmp_path: Path) -> None:
    seen: list[tuple[int, int | None]] = []
    path = models.install(NAME, tmp_path, base_url=server.url, progress=lambda d, t: seen.append((d, t)))
    assert path == tmp_path / NAME
    for name, data in MODEL_FILES.items():
        assert (tmp_path / name).read_bytes() == data
    assert seen[-1] == (len(model_zip), len(model_zip))
    assert [d for d, _ in seen] == sorted(d for d, _ in seen) and len(seen) > 3
    assert sorted(p.name for p in tmp_path.iterdir()) == [".downloads", NAME]  # no temp dirs left
    assert list((tmp_path / ".downloads").iterdir()) == []

    [inst] = models.list_installed(tmp_path)
    assert inst.name == NAME and inst.sha256 == hashlib.sha256(model_zip).hexdigest()
    assert inst.source_url == f"{server.url}/{NAME}.zip" and inst.size_bytes > len(model_zip) - 1000

    with pytest.raises(ModelInstallError, match="already installed"):
        models.install(NAME, tmp_path, base_url=server.url)
    assert models.remove(NAME, tmp_path) is True
    assert not (tmp_path / NAME).exists() and models.list_installed(tmp_path) == []
    assert models.remove(NAME, tmp_path) is False


def test_replace_reinstalls(server: Server, model_zip: bytes, tmp_path: Path) -> None:
    models.install(NAME, tmp_path, base_url=server.url)
    (tmp_path / NAME / "README").write_bytes(b"edited")
    models.install(NAME, tmp_path, base_url=server.url, replace=True)
    assert (tmp_path / NAME / "README").read_bytes() == b"test model\n"


def test_checksum_mismatch_installs_nothing(server: Server, model_zip: bytes, tmp_path: Path) -> None:
    server.publish(NAME, model_zip, md5="0" * 32)
    with pytest.raises(ModelInstallError, match="MD5 mismatch"):
        models.install(NAME, tmp_path, base_url=server.url)
    assert not (tmp_path / NAME).exists() and list((tmp_path / ".downloads").iterdir()) == []
    # An expected SHA-256 (from the caller or the catalogue) takes precedence over the MD5.
    with pytest.raises(ModelInstallError, match="SHA-256 mismatch"):
        models.install(NAME, tmp_path, base_url=server.url, sha256="ab" * 32)
    good = hashlib.sha256(model_zip).hexdigest()
    assert models.install(NAME, tmp_path, base_url=server.url, sha256=good).is_dir()


def test_interrupted_download_resumes_with_range(server: Server, model_zip: bytes, tmp_path: Path) -> None:
    server.cut_after = 100_000
    with pytest.raises(ModelInstallError, match="resume"):
        models.install(NAME, tmp_path, base_url=server.url)
    part = tmp_path / ".downloads" / f"{NAME}.zip.part"
    assert part.stat().st_size == 100_000 and not (tmp_path / NAME).exists()

    seen: list[int] = []
    models.install(NAME, tmp_path, base_url=server.url, progress=lambda d, t: seen.append(d))
    zip_requests = [r for p, r in server.requests if p.endswith(".zip")]
    assert zip_requests == [None, "bytes=100000-"]
    assert seen[0] == 100_000 and seen[-1] == len(model_zip)
    assert (tmp_path / MODEL_FILES_KEY).read_bytes() == MODEL_FILES[MODEL_FILES_KEY]


MODEL_FILES_KEY = f"{NAME}/am/final.mdl"


def test_server_without_range_support_restarts(server: Server, model_zip: bytes, tmp_path: Path) -> None:
    server.cut_after = 50_000
    with pytest.raises(ModelInstallError):
        models.install(NAME, tmp_path, base_url=server.url)
    server.honor_range = False
    models.install(NAME, tmp_path, base_url=server.url)
    assert (tmp_path / MODEL_FILES_KEY).read_bytes() == MODEL_FILES[MODEL_FILES_KEY]


def test_complete_part_file_is_not_downloaded_again(server: Server, model_zip: bytes, tmp_path: Path) -> None:
    (tmp_path / ".downloads").mkdir(parents=True)
    (tmp_path / ".downloads" / f"{NAME}.zip.part").write_bytes(model_zip)
    models.install(NAME, tmp_path, base_url=server.url)
    assert [p for p, _ in server.requests if p.endswith(".zip")] == []


def test_zip_without_top_directory(server: Server, tmp_path: Path) -> None:
    server.publish("flat-model", build_zip({"am/final.mdl": b"m", "conf/model.conf": b"c"}))
    models.install("flat-model", tmp_path, base_url=server.url)
    assert (tmp_path / "flat-model" / "am" / "final.mdl").read_bytes() == b"m"


@pytest.mark.parametrize("member", ["../evil.txt", "/abs/evil.txt", "m/../../evil.txt"])
def test_unsafe_zip_is_rejected(server: Server, tmp_path: Path, member: str) -> None:
    server.publish("bad-model", build_zip({"bad-model/am/x": b"1", member: b"evil"}))
    root = tmp_path / "models"
    with pytest.raises(ModelInstallError, match="unsafe"):
        models.install("bad-model", root, base_url=server.url)
    assert not (root / "bad-model").exists()
    assert not list(tmp_path.rglob("evil.txt"))


def test_unknown_or_invalid_names(server: Server, model_zip: bytes, tmp_path: Path) -> None:
    with pytest.raises(ModelInstallError, match="not in the model list"):
        models.install("vosk-model-nope", tmp_path, base_url=server.url)
    for bad in ("../x", "a/b", "", ".."):
        with pytest.raises(ModelInstallError, match="not a model name"):
            models.install(bad, tmp_path, base_url=server.url)
        with pytest.raises(ModelInstallError, match="not a model name"):
            models.remove(bad, tmp_path)


def test_unreachable_catalog_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelInstallError, match="cannot read the model list"):
        models.fetch_catalog("http://127.0.0.1:9/vosk/models", timeout=2)


def test_models_cli_installs_lists_and_removes(server: Server, model_zip: bytes, tmp_path: Path) -> None:
    """`callcenter models ...` as an admin types it, against the local stand-in of the download site."""
    from typer.testing import CliRunner

    from callcenter.cli import app

    runner = CliRunner()
    where = ["--models-dir", str(tmp_path), "--config", os.devnull]
    available = runner.invoke(app, ["models", "list", "--available", "--json", "--url", server.url, *where])
    assert available.exit_code == 0, available.output
    assert NAME in {row["name"] for row in json.loads(available.output)}
    installed = runner.invoke(app, ["models", "install", NAME, "--url", server.url, *where])
    assert installed.exit_code == 0, installed.output
    assert f"installed {NAME}" in installed.output
    listed = runner.invoke(app, ["models", "list", "--json", *where])
    assert [row["name"] for row in json.loads(listed.output)] == [NAME]
    again = runner.invoke(app, ["models", "install", NAME, "--url", server.url, *where])
    assert again.exit_code == 1 and "already installed" in again.output
    wrong_sum = ["--sha256", "0" * 64, "--replace", "--url", server.url]
    bad = runner.invoke(app, ["models", "install", NAME, *wrong_sum, *where])
    assert bad.exit_code == 1 and "SHA-256 mismatch" in bad.output
    assert runner.invoke(app, ["models", "remove", NAME, *where]).exit_code == 0
    gone = runner.invoke(app, ["models", "remove", NAME, *where])
    assert gone.exit_code == 1 and "not installed" in gone.output
