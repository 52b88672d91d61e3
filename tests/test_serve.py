"""``fastclr serve`` over real HTTP on the loopback interface: embed and search answer what the index holds,
bad requests get 4xx JSON (never a 500), ids outside the index resolve to nothing, the token is enforced, a
non-loopback bind without a token exits 2 in one line, and the page shows the neighbours in headless Chromium."""

from __future__ import annotations

import colorsys
import json
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("faiss", reason="the service needs faiss (pip install 'fastclr[search]')")
pytest.importorskip("fastapi", reason="the service needs FastAPI (pip install 'fastclr[search]')")
pytest.importorskip("uvicorn", reason="the service needs uvicorn (pip install 'fastclr[search]')")

from evalkit import cli, last_json, make_checkpoint, one_line_error  # noqa: E402

COLOURS = 24


def colour(i: int) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(i / COLOURS, 0.9, 0.95)
    return round(255 * r), round(255 * g), round(255 * b)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(url: str, fields: dict | None = None, files: dict | None = None, headers: dict | None = None):
    """(status, headers, body) of a GET, or of a multipart POST when fields or files are given."""
    data, head = None, dict(headers or {})
    if fields is not None or files is not None:
        boundary = uuid.uuid4().hex
        parts = []
        for name, value in (fields or {}).items():
            parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
        for name, (filename, content) in (files or {}).items():
            parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                         f"Content-Type: application/octet-stream\r\n\r\n".encode() + content + b"\r\n")  # fmt: skip
        data = b"".join(parts) + f"--{boundary}--\r\n".encode()
        head["Content-Type"] = f"multipart/form-data; boundary={boundary}"
    req = urllib.request.Request(url, data=data, headers=head, method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def wait_for(url: str, proc: subprocess.Popen | None = None, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the server exited: {proc.stderr.read() if proc.stderr else ''}")
        try:
            if request(url + "/health")[0] == 200:
                return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer in {seconds} s")


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    """24 images of distinct saturated colours (a light dot each, so none is another's copy), a checkpoint at
    16 px, and their index."""
    root = tmp_path_factory.mktemp("serve")
    folder = root / "colours"
    folder.mkdir()
    for i in range(COLOURS):
        pixels = np.full((16, 16, 3), colour(i), dtype=np.uint8)
        pixels[i % 12 : i % 12 + 3, (5 * i) % 13 : (5 * i) % 13 + 3] = 240
        Image.fromarray(pixels).save(folder / f"c{i:02d}.png")
    ckpt, _ = make_checkpoint(root / "last.pt", str(folder), image_size=16)
    out = root / "colours.index"
    last_json(cli("index", "--checkpoint", str(ckpt), "--data", str(folder), "--out", str(out)))
    return root, folder, out


@pytest.fixture(scope="module")
def served(indexed):
    """``python -m fastclr serve INDEX`` in its own process on a free loopback port, uploads capped at 64 KiB."""
    root, folder, out = indexed
    port = free_port()
    command = [sys.executable, "-m", "fastclr", "serve", str(out), "--port", str(port), "--max-upload-mb", "0.0625"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(url, proc)
        yield url, folder, out
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def ids_and_vectors(out) -> tuple[list[str], np.ndarray]:
    return json.loads((out / "ids.json").read_text()), np.load(out / "vectors.npy")


def test_health_docs_and_schema(served):
    url, _, _ = served
    status, headers, body = request(url + "/health")
    health = json.loads(body)
    assert status == 200 and health["status"] == "ok" and health["count"] == COLOURS and health["image_size"] == 16
    assert request(url + "/docs")[0] == 200
    paths = json.loads(request(url + "/openapi.json")[2])["paths"]
    assert {"/embed", "/search", "/explain", "/health", "/thumb/{id}"} <= set(paths)
    status, headers, body = request(url + "/")
    assert status == 200 and b"<script>" in body and b"http" not in body.split(b"<script>")[0]  # nothing external


def test_embed_returns_the_vector_the_index_holds(served):
    url, folder, out = served
    ids, vectors = ids_and_vectors(out)
    status, _, body = request(url + "/embed", files={"image": ("c05.png", (folder / "c05.png").read_bytes())})
    got = json.loads(body)
    assert status == 200 and got["dim"] == vectors.shape[1]
    np.testing.assert_allclose(got["vector"], vectors[ids.index(str(folder / "c05.png"))], atol=1e-5)


def test_search_by_upload_and_by_id_equals_brute_force(served):
    url, folder, out = served
    ids, vectors = ids_and_vectors(out)
    status, _, body = request(url + "/search", {"k": 5}, {"image": ("any.png", (folder / "c07.png").read_bytes())})
    found = json.loads(body)["neighbours"]
    row = ids.index(str(folder / "c07.png"))
    order = np.argsort(-(vectors @ vectors[row]), kind="stable")
    assert status == 200 and [n["id"] for n in found] == [ids[i] for i in order[:5]]
    assert found[0]["score"] == pytest.approx(1.0, abs=1e-5)
    status, _, body = request(url + "/search", {"id": ids[row], "k": 4})
    by_id = json.loads(body)["neighbours"]
    assert status == 200 and [n["id"] for n in by_id] == [ids[i] for i in order[1:5]]  # itself left out


def test_bad_requests_get_4xx_json_never_a_500(served):
    url, folder, out = served
    ids, _ = ids_and_vectors(out)
    png = (folder / "c01.png").read_bytes()
    cases = [
        (("/search", None, {"image": ("x.jpg", b"plain text, no image")}), 400, "not an image"),
        (("/embed", None, {"image": ("empty.png", b"")}), 400, "empty file"),
        (("/embed", None, {"image": ("cut.png", png[: len(png) // 2])}), 400, "cannot decode"),
        (("/search", {"k": "3"}, None), 422, "image file or an id"),
        (("/search", {"id": "no-such-id"}, None), 404, "no such id"),
        (("/search", {"id": "/etc/passwd"}, None), 404, "no such id"),
        (("/search", {"id": ids[0], "k": "0"}, None), 422, "greater than or equal"),
        (("/embed", None, {"image": ("big.png", b"\0" * 100_000)}), 413, "larger than"),
        (("/explain", {"id": "nope", "query_id": ids[0]}, None), 404, "no such id"),
        (("/thumb/no-such-id", None, None), 404, "no such id"),
        (("/thumb//etc/passwd", None, None), 404, "no such id"),
        (("/thumb/" + urllib.parse.quote("../../../../etc/passwd", safe=""), None, None), 404, "no such id"),
    ]
    for (path, fields, files), code, words in cases:
        status, headers, body = request(url + path, fields, files)
        assert status == code and headers["content-type"].startswith("application/json"), (path, status, body)
        assert words in json.dumps(json.loads(body)), (path, body)


def test_thumbnails_and_explanations_are_pngs(served):
    url, folder, out = served
    ids, _ = ids_and_vectors(out)
    status, headers, body = request(url + "/thumb/" + urllib.parse.quote(ids[3], safe=""))
    assert status == 200 and headers["content-type"] == "image/png" and body.startswith(b"\x89PNG")
    status, headers, body = request(
        url + "/explain", {"id": ids[4]}, {"image": ("q.png", (folder / "c03.png").read_bytes())}
    )
    assert status == 200 and headers["content-type"] == "image/png"
    status, _, again = request(url + "/explain", {"id": ids[4], "query_id": ids[3]})
    assert status == 200 and again == body  # the upload and the indexed file give the same picture


def test_the_token_is_enforced(indexed):
    import uvicorn

    from fastclr.api.index import Index
    from fastclr.api.serve import create_app

    _, folder, out = indexed
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(Index.load(out), token="s3cret"), port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(url, seconds=60)
        ids, _ = ids_and_vectors(out)
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
            status, _, body = request(url + "/search", {"id": ids[0]}, headers=headers)
            assert status == 401 and "token" in json.loads(body)["detail"], headers
        assert request(url + "/thumb/" + urllib.parse.quote(ids[0], safe=""))[0] == 401
        status, _, body = request(url + "/search", {"id": ids[0]}, headers={"Authorization": "Bearer s3cret"})
        assert status == 200 and len(json.loads(body)["neighbours"]) == 10
        assert request(url + "/health")[0] == 200 and json.loads(request(url + "/health")[2])["token"] is True
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def test_listening_beyond_loopback_needs_a_token(indexed, monkeypatch):
    _, _, out = indexed
    monkeypatch.delenv("FASTCLR_SERVE_TOKEN", raising=False)
    for host in ("0.0.0.0", "192.168.1.10", "::"):
        assert "needs --token" in one_line_error(cli("serve", str(out), "--host", host))
    assert "--port 0: must be in 1..65535" in one_line_error(cli("serve", str(out), "--port", "0"))
    assert "not a fastclr index" in one_line_error(cli("serve", str(out.parent)))
    r = subprocess.run([sys.executable, "-m", "fastclr", "serve", str(out), "--host", "0.0.0.0"], capture_output=True,
                       text=True, timeout=120, env={k: v for k, v in __import__("os").environ.items()
                                                    if k != "FASTCLR_SERVE_TOKEN"})  # fmt: skip
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr


def _browser() -> str | None:
    return next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


def test_the_page_shows_the_neighbours_in_headless_chromium(served, tmp_path):
    browser = _browser()
    if browser is None:
        pytest.skip("no chromium binary on PATH (Debian: apt-get install chromium; .ci/run installs it)")
    url, folder, out = served
    ids, _ = ids_and_vectors(out)
    query = ids[0]
    neighbours = json.loads(request(url + "/search", {"id": query, "k": 12})[2])["neighbours"]
    shot = tmp_path / "page.png"
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1200,900",
           "--virtual-time-budget=20000", f"{url}/?id={urllib.parse.quote(query, safe='')}"]  # fmt: skip
    subprocess.run(cmd, check=False, capture_output=True, timeout=120)
    assert shot.is_file(), "chromium wrote no screenshot"
    with Image.open(shot) as im:
        pixels = np.asarray(im.convert("RGB"), dtype=np.int64)
    grid = pixels[:, 330:]  # right of the query column: the neighbours' cards
    seen = 0
    for n in neighbours:
        rgb = np.array(colour(int(n["id"].rsplit("c", 1)[1][:2])))
        seen += int((np.abs(grid - rgb).max(axis=2) <= 12).sum() > 2000)  # a thumbnail's worth of that colour
    assert seen == len(neighbours) == 12, seen
    query_column = pixels[140:410, :300]
    own = np.array(colour(int(query.rsplit("c", 1)[1][:2])))
    assert (np.abs(query_column - own).max(axis=2) <= 40).sum() > 2000  # the query itself (under the overlay), left


def test_the_service_follows_an_updated_index(indexed, tmp_path, capsys):
    """fastclr index --update rewrites the folder under a running service: the next request sees the new
    images; an index rewritten by another encoder is not taken."""
    from fastapi.testclient import TestClient

    from fastclr.api.index import Index
    from fastclr.api.serve import create_app

    root, folder, out = indexed
    data, ix = tmp_path / "colours", tmp_path / "ix"
    shutil.copytree(folder, data)
    (data / "c00.png").unlink()
    ckpt = json.loads((out / "meta.json").read_text())["encoder"]["checkpoint"]
    last_json(cli("index", "--checkpoint", ckpt, "--data", str(data), "--out", str(ix)))
    client = TestClient(create_app(Index.load(ix)))
    assert client.get("/health").json()["count"] == COLOURS - 1
    new = str((data / "c00.png").resolve())
    assert client.post("/search", data={"id": new, "k": 2}).status_code == 404
    shutil.copy(folder / "c00.png", data / "c00.png")
    last_json(cli("index", "--out", str(ix), "--update"))
    assert client.get("/health").json()["count"] == COLOURS
    found = client.post("/search", files={"image": ("q.png", (folder / "c00.png").read_bytes())}, data={"k": 1})
    assert (
        found.json()["neighbours"][0]["id"] == new
        and client.get("/thumb/" + urllib.parse.quote(new)).status_code == 200
    )
    other, _ = make_checkpoint(tmp_path / "other.pt", str(data), image_size=16, seed=3)
    last_json(cli("index", "--checkpoint", str(other), "--data", str(data), "--out", str(tmp_path / "o")))
    for name in ("vectors.npy", "ids.json", "index.faiss", "meta.json"):  # another encoder's index in its place
        shutil.copy(tmp_path / "o" / name, ix / name)
    capsys.readouterr()
    health = client.get("/health").json()
    assert health["count"] == COLOURS and client.post("/search", data={"id": new, "k": 1}).status_code == 200
    warned = capsys.readouterr().err
    assert "changed but was not reloaded" in warned and "built by another encoder" in warned
