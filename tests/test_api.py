"""The HTTP API of a real two-site federation on 127.0.0.1: `POST /v1/query` answers as `ffnode query` does, in
every input form; bad input, an oversized body and a missing token each get a clear 4xx; the read endpoints
match the CLI's --json; /metrics moves with what the node does; actions need the token and act; and the status page
renders the node's phase and peer count in a real headless Chromium."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from ffnode.data.sources import load_dataset
from harness.localnet import Daemons, init_home, status, wait_for
from tests.daemons import class_file, cli, cli_json, free_port

CLASSES = ["0", "1", "2"]
TIMEOUT = 240.0


@dataclass
class Site:
    home: Path  # site a: digits 0 and 1, the API on
    other: Path  # site b: digit 2
    url: str
    images: np.ndarray  # (B, 8, 8, 1) digits test images of the 3 classes
    pngs: list[Path]


def _ready(homes: list[Path]) -> bool:
    return all((s := status(h)) and s["phase"] == "ready" and s["artifacts"].get("expert_live") == 2 for h in homes)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("api")
    a, b, port = root / "a", root / "b", free_port()
    api = {"api": {"listen": f"127.0.0.1:{port}", "max_body_mb": 1, "max_images": 64, "max_connections": 8}}
    addr = init_home(a, port=free_port(), data=class_file(root, [0, 1], "a"), classes=CLASSES, profile="tiny",
                     settings=api)  # fmt: skip
    init_home(b, port=free_port(), data=class_file(root, [2], "b"), classes=CLASSES, profile="tiny", seed=1,
              bootstrap=[addr])  # fmt: skip
    test = load_dataset("digits", split="test", classes=[str(i) for i in range(10)])
    keep = np.flatnonzero(np.isin(test.labels, [0, 1, 2]))[:30]
    pngs = []
    for i in keep:
        pngs.append(root / f"t{i}.png")
        Image.fromarray(test.images[i][..., 0]).save(pngs[-1])
    with Daemons() as daemons:
        daemons.start(a)
        daemons.start(b)
        wait_for(lambda: _ready([a, b]), timeout=TIMEOUT, what="2 sites ready with 2 experts", daemons=daemons)
        yield Site(a, b, f"http://127.0.0.1:{port}", test.images[keep], pngs)


def _png(image: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(image[..., 0]).save(out, format="PNG")
    return out.getvalue()


def _same(answer: dict, cli_answer: dict) -> None:
    assert answer["predictions"] == cli_answer["predictions"]
    assert answer["experts"] == cli_answer["experts"] and answer["rule"] == cli_answer["rule"]
    assert np.allclose(answer["probabilities"], cli_answer["probabilities"], atol=1e-6)


def test_query_answers_as_ffnode_query_in_every_form(site: Site) -> None:
    expected = cli_json("query", "--home", str(site.home), *map(str, site.pngs))
    assert len(expected["experts"]) == 2
    with httpx.Client(base_url=site.url, timeout=60) as http:
        one = http.post("/v1/query", content=site.pngs[0].read_bytes(), headers={"content-type": "image/png"})
        assert one.status_code == 200, one.text
        assert one.json()["predictions"] == expected["predictions"][:1]
        b64 = [base64.b64encode(p.read_bytes()).decode() for p in site.pngs]
        forms = [
            {"images": b64},
            {"pixels": base64.b64encode(site.images.tobytes()).decode(), "shape": list(site.images.shape)},
            {"arrays": site.images.tolist()},
        ]
        for body in forms:
            r = http.post("/v1/query", json=body)
            assert r.status_code == 200, r.text
            _same(r.json(), expected)
        r = http.post("/v1/query?rule=product", json={"images": b64})
        assert r.status_code == 200 and r.json()["rule"] == "product"


def test_bad_queries_get_a_4xx_naming_the_problem(site: Site) -> None:
    json_type = {"content-type": "application/json"}
    big = {"content": _png(np.zeros((16, 16, 1), np.uint8)), "headers": {"content-type": "image/png"}}
    cases = [  # (request kwargs, status, words the reason holds)
        (big, 400, "16x16 pixels, expected 8x8"),
        ({"content": b"not a png", "headers": {"content-type": "image/png"}}, 400, "not an image"),
        ({"content": b"x", "headers": {"content-type": "text/plain"}}, 415, "text/plain"),
        ({"json": {"images": ["%%%"]}}, 400, "base64"),
        ({"json": {"images": [], "arrays": []}}, 400, "exactly one of"),
        ({"json": {"pixels": "AAAA", "shape": [1, 8, 8, 1]}}, 400, "3 bytes, not the 64"),
        ({"json": {"arrays": [[[[300]] * 8] * 8]}}, 400, "0 to 255"),
        ({"json": {"arrays": np.zeros((65, 8, 8, 1), int).tolist()}}, 413, "api.max_images (64)"),
        ({"json": {"images": [], "rule": "vote"}}, 400, "no images"),
        ({"content": b"{" * 2**20 + b"}", "headers": {"content-type": "application/json"}}, 413, "api.max_body_mb"),
        ({"content": b"{nope", "headers": {"content-type": "application/json"}}, 400, "not a query"),
        ({"content": iter([b" " * 2**19] * 2 + [b" "]), "headers": json_type}, 413, "max_body"),  # streamed
    ]
    with httpx.Client(base_url=site.url, timeout=60) as http:
        for kwargs, code, words in cases:
            r = http.post("/v1/query", **kwargs)
            assert r.status_code == code and words in r.json()["detail"], (kwargs.get("headers"), r.status_code, r.text)
        detail = http.post("/v1/query", **big).json()["detail"]
        assert detail.startswith("image 0 is 16x16 pixels, expected 8x8"), detail  # said as is, not as "damaged"
        r = http.post("/v1/query", json={"images": [base64.b64encode(site.pngs[0].read_bytes()).decode()],
                                         "rule": "vote"})  # fmt: skip
        assert r.status_code == 400 and "unknown" in r.json()["detail"] and "vote" in r.json()["detail"]


def test_reads_match_the_cli_and_the_schema_is_published(site: Site) -> None:
    with httpx.Client(base_url=site.url, timeout=60) as http:
        st = http.get("/v1/status").json()
        assert st["phase"] == "ready" and st["connected_peers"] == 1 and st["api"] == site.url + "/"
        table = cli("status", "--home", str(site.home))
        assert table.returncode == 0 and site.url in table.stdout
        assert st["peer_id"] == cli_json("id", "--home", str(site.home))["peer_id"]
        arts = http.get("/v1/artifacts").json()
        assert {(r["id"], r["state"]) for r in arts} == {
            (r["id"], r["state"]) for r in cli_json("artifacts", "--home", str(site.home))
        }
        peers = http.get("/v1/peers").json()
        assert [p["peer_id"] for p in peers if p["connected"]] == [cli_json("id", "--home", str(site.other))["peer_id"]]
        audits = http.get("/v1/audit").json()
        assert len(audits) == 3 and audits == cli_json("audit", "--home", str(site.home))  # 2 own, 1 peer's
        events = http.get("/v1/events", params={"limit": 5}).json()
        assert 0 < len(events) <= 5 and all("time" in e and "event" in e for e in events)
        schema = http.get("/openapi.json").json()
        assert {"/v1/query", "/v1/status", "/v1/peers", "/v1/artifacts", "/v1/audit", "/v1/revoke"} <= set(
            schema["paths"]
        )
        assert set(schema["paths"]["/v1/query"]["post"]["requestBody"]["content"]) == {
            "application/json", "image/png", "image/jpeg"
        }  # fmt: skip
        assert http.get("/docs").status_code == 404  # no page that loads scripts from the internet


def _scrape(http: httpx.Client) -> dict[str, float]:
    r = http.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return {
        s.name + json.dumps(s.labels, sort_keys=True): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


def test_metrics_show_the_named_series_and_move(site: Site) -> None:
    with httpx.Client(base_url=site.url, timeout=60) as http:
        before = _scrape(http)
        for _ in range(3):
            assert http.post("/v1/query", json={"arrays": site.images[:4].tolist()}).status_code == 200
        assert http.post("/v1/query", json={"arrays": [[[[300]] * 8] * 8]}).status_code == 400  # not a query
        after = _scrape(http)

    def delta(key: str) -> float:
        return after[key] - before.get(key, 0.0)

    assert delta('ffnode_queries_total{"outcome": "answered"}') == 3
    assert delta("ffnode_query_images_total{}") == 12 and delta("ffnode_query_seconds_count{}") == 3
    assert after['ffnode_phase{"phase": "ready"}'] == 1 and after["ffnode_peers_connected{}"] == 1
    assert after['ffnode_libp2p_connections{"direction": "total"}'] >= 1  # py-libp2p's own count
    assert after['ffnode_artifacts{"kind": "expert", "state": "live"}'] == 2
    assert after['ffnode_artifacts{"kind": "factory", "state": "live"}'] == 3
    assert after['ffnode_jobs_total{"outcome": "ok"}'] >= 3  # 2 factories and an expert, at least
    assert after['ffnode_job_seconds_count{"kind": "expert"}'] >= 1
    assert after['ffnode_sent_bytes_total{"kind": "blob"}'] > 0 and after["ffnode_fetched_bytes_total{}"] > 0
    assert after["ffnode_messages_accepted_total{}"] >= 2
    assert after['ffnode_audits{"own": "true", "verdict": "inconclusive"}'] == 2  # 20 held-out images each
    assert after["ffnode_fault{}"] == 0 and after["process_resident_memory_bytes{}"] > 0


def _ztxt_bomb() -> bytes:
    """An 8x8 PNG whose compressed text chunk holds 2 MB: 2 KB on the wire, large once PIL reads its header."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("comment", "x" * 2 * 2**20, zip=True)
    out = io.BytesIO()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(out, format="PNG", pnginfo=info)
    return out.getvalue()


def test_hostile_clients_cost_their_own_request(site: Site) -> None:
    bmp = io.BytesIO()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(bmp, format="BMP")
    png = {"content-type": "image/png"}
    with httpx.Client(base_url=site.url, timeout=60) as http:
        # a name that was made to resolve to 127.0.0.1 (DNS rebinding) reads nothing without the token
        assert http.get("/v1/status", headers={"host": "rebind.example"}).status_code == 401
        assert http.get("/v1/status", headers={"host": "localhost:1"}).status_code == 200
        assert http.get("/v1/status", headers={"x-forwarded-for": "203.0.113.9"}).status_code == 200  # the socket's
        assert http.get("/", headers={"host": "rebind.example"}).status_code == 200  # the page holds no data
        # an action's body is not read before its token is checked
        for body in (b"{nope", b"{" * 2**16):
            r = http.post("/v1/block", content=body, headers={"content-type": "application/json"})
            assert r.status_code == 401, r.text
        # only PNG and JPEG are decoded; a PNG's text is bounded; a body is sized up before it is parsed
        assert http.post("/v1/query", content=bmp.getvalue(), headers=png).status_code == 400
        r = http.post("/v1/query", content=_ztxt_bomb(), headers=png)
        assert r.status_code == 400 and "damaged image" in r.json()["detail"], r.text
        flood = b'{"arrays": [' + b"[" * 30 + b"]" * 30 + b"," + b" " * 400_000 + b"1]}"
        r = http.post("/v1/query", content=flood, headers={"content-type": "application/json"})
        assert r.status_code == 413 and "api.max_images (64)" in r.json()["detail"], r.text
    # connections that never send a request do not hold every slot (api.max_connections 8)
    idle = [socket.create_connection(("127.0.0.1", int(site.url.rsplit(":", 1)[1]))) for _ in range(12)]
    try:
        with httpx.Client(base_url=site.url, timeout=30) as http:
            assert http.get("/v1/status").status_code == 200
    finally:
        for sock in idle:
            sock.close()


def test_trust_edits_from_many_callers_all_land(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from ffnode.config import Config, edit_trust

    config = Config()
    config.federation.classes = CLASSES
    config.save(tmp_path)
    ids = [f"{i:064x}" for i in range(24)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda aid: edit_trust(tmp_path, "quarantine", aid, True), ids))
    assert sorted(Config.load(tmp_path).federation.quarantined) == ids


def test_rejection_reasons_count_under_bounded_labels() -> None:
    from ffnode.daemon.ledger import REASON_KINDS, Ledger, reason_kind

    assert reason_kind("its blob for factory 3f2a9c1d4e5f: size 12 != 13") == "its blob for factory #: size # != #"
    ledger = Ledger(peers_tracked=4, bad_items=4)
    for i in range(REASON_KINDS + 10):
        ledger.reject(f"peer{i % 7}", f"unknown field 'f{i}x{i}' and {i} more", quiet=True)
        ledger.reject("p", f"kind {chr(65 + i % 26)}{chr(65 + i // 26)} of refusal", quiet=True)
    reasons = ledger.reasons()
    assert reasons["unknown field # and # more"] == REASON_KINDS + 10 and len(reasons) == REASON_KINDS + 1
    assert reasons["other"] == 11 and sum(reasons.values()) == 2 * (REASON_KINDS + 10)


def test_actions_need_the_token_and_act(site: Site) -> None:
    theirs = next(r for r in cli_json("artifacts", "--home", str(site.home)) if r["kind"] == "expert"
                  and r["owner"] == cli_json("id", "--home", str(site.other))["peer_id"])  # fmt: skip
    with httpx.Client(base_url=site.url, timeout=60) as http:
        body = {"artifact": theirs["id"]}
        missing = http.post("/v1/quarantine", json=body)
        assert missing.status_code == 401 and "ffnode api-token" in missing.json()["detail"]
        token = cli_json("api-token", "--home", str(site.home))["token"]
        wrong = http.post("/v1/quarantine", json=body, headers={"authorization": "Bearer " + "x" * len(token)})
        assert wrong.status_code == 403
        auth = {"authorization": f"Bearer {token}"}
        assert http.post("/v1/quarantine", json={"artifact": "f" * 64}, headers=auth).status_code == 404
        assert http.post("/v1/leave", json={"confirm": False}, headers=auth).status_code == 400
        r = http.post("/v1/quarantine", json=body, headers=auth)
        assert r.status_code == 200 and theirs["id"] in r.json()["quarantined"], r.text
        rows = {a["id"]: a for a in http.get("/v1/artifacts").json()}
        assert rows[theirs["id"]]["state"] == "quarantined"
        answer = http.post("/v1/query", json={"arrays": site.images[:2].tolist()}).json()
        assert [e["id"] for e in answer["experts"]] == [http.get("/v1/status").json()["current_expert"]]
        assert http.post("/v1/quarantine", json=body | {"undo": True}, headers=auth).status_code == 200
        wait_for(lambda: {a["id"]: a["state"] for a in http.get("/v1/artifacts").json()}[theirs["id"]] == "live",
                 timeout=30, what="the expert live again")  # fmt: skip
        kinds = [e["event"] for e in http.get("/v1/events", params={"limit": 50}).json()]
        assert "quarantined" in kinds and "unquarantined" in kinds
        rotated = cli("api-token", "--home", str(site.home), "--rotate")
        assert rotated.returncode == 0
        assert http.post("/v1/quarantine", json=body, headers=auth).status_code == 403  # the old token is gone


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium (Debian's package `chromium`): the page is not rendered")
def test_status_page_renders_phase_and_peers_in_chromium(site: Site, tmp_path: Path) -> None:
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=8000",
             "--window-size=1200,900"]  # fmt: skip
    dom = subprocess.run([*flags, "--dump-dom", site.url + "/"], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    peers = len([p for p in cli_json("peers", "--home", str(site.home)) if p["connected"]])
    assert '<b id="phase">ready</b>' in html and f'<b id="peers-count">{peers}</b>' in html, html[:3000]
    assert cli_json("id", "--home", str(site.home))["peer_id"] in html and "could not read" not in html
    shot = tmp_path / "page.png"
    out = subprocess.run([*flags, f"--screenshot={shot}", site.url + "/"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and shot.exists(), out.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("L"))
    assert pixels.shape == (900, 1200) and pixels.std() > 10  # drawn, not a blank page
    if dest := os.environ.get("FFNODE_PAGE_PNG"):  # the picture in docs/operators.md
        shutil.copy(shot, dest)
