"""The sequence-diagram page against the real lab (issue 9): headless Chromium opens the director's
``/watch/ui`` for a deployment of its own, a redeploy with a changed property draws redis/0's
drain → stop → apply → start, a click shows an arrow's JSON, and a screenshot is kept in .artifacts/watch-ui.png."""
from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator

import pytest

from tests.support.chromium import browser_errors, chromium, rows, screenshot, wait_for

from .conftest import ROOT, Lab

pytestmark = pytest.mark.e2e

NAME = "watch-ui"
ORDER = ["drain", "stop", "apply", "start"]


def manifest(password: str) -> str:
    text = (ROOT / "workshop" / "manifests" / "redis-solo-overrides.yml").read_text()
    text, n = re.subn(r"(?m)^name: redis-solo$", f"name: {NAME}", text)
    assert n == 1, "the overrides manifest's name line moved"
    text, n = re.subn(r"(?m)^    password: supersecret$", f"    password: {password}", text)
    assert n == 1, "the overrides manifest's password line moved"
    return text


@pytest.fixture
def deployment(lab: Lab) -> Iterator[str]:
    task = lab.deploy(manifest("supersecret"))
    assert task["state"] == "done", task
    try:
        yield NAME
    finally:
        status, body, _ = lab.request("DELETE", f"/deployments/{NAME}")
        assert status == 202, body
        assert lab.wait_task(json.loads(body)["id"])["state"] == "done"


def test_the_page_draws_a_redeploy_of_redis_0(lab: Lab, deployment: str) -> None:
    with chromium(auth=("admin", "admin")) as drv:
        drv.get(f"{lab.api}/watch/ui?deployment={deployment}&history=2000")
        wait_for("the event stream", lambda: drv.execute_script(
            "return document.getElementById('status').dataset.state") == "connected", timeout=30)
        # the first deploy, from the history: its apply and start of redis/0
        wait_for("the first deploy's start of redis/0 (history)",
                 lambda: "start" in [r["method"] for r in rows(drv, instance="redis/0", kind="request")], timeout=30)
        mark = max(int(r["seq"]) for r in rows(drv))

        t0 = time.monotonic()
        task = lab.deploy(manifest("changed-for-the-watch-page"))
        assert task["state"] == "done", task

        def redeploy() -> list[dict[str, str]] | None:
            got = [r for r in rows(drv, instance="redis/0") if int(r["seq"]) > mark]
            requests = [r["method"] for r in got if r["kind"] == "request" and r["method"] in ORDER]
            replies = [r["method"] for r in got if r["kind"] == "reply" and r["method"] in ORDER]
            return got if requests == ORDER and replies == ORDER else None
        got = wait_for("drain → stop → apply → start of redis/0", redeploy, timeout=60)
        print(f"redeploy drawn {time.monotonic() - t0:.1f}s after it was sent")
        seqs = [int(r["seq"]) for r in got if r["kind"] == "request" and r["method"] in ORDER]
        assert seqs == sorted(seqs)
        assert all(r["deployment"] == deployment for r in got if r["kind"] in ("request", "reply"))
        apply_bar = [r for r in got if r["kind"] == "activation" and r["method"] == "apply"]
        if apply_bar:     # apply runs as an agent task: its bar is labelled with its time and polls
            assert re.fullmatch(r"apply … [\d.]+ m?s \(\d+ polls?\)", apply_bar[0]["text"]), apply_bar

        reply = drv.find_element(
            "css selector", f'#diagram g.row[data-kind="reply"][data-method="apply"][data-instance="redis/0"]'
                            f'[data-seq="{next(r["seq"] for r in got if r["kind"] == "reply" and r["method"] == "apply")}"]')
        reply.click()
        detail = wait_for("the apply's JSON in #detail",
                          lambda: (t := drv.find_element("id", "detail").text) and '"method": "apply"' in t and t)
        for needle in ('"kind": "reply"', '"method": "apply"', '"instance": "redis/0"', f'"deployment": "{deployment}"',
                       '"state": "done"', '"latency_ms":', '"message": {'):
            assert needle in detail, (needle, detail[:2000])
        parsed = json.loads(drv.find_element("id", "detail-json").text)
        assert parsed["kind"] == "reply" and parsed["method"] == "apply" and parsed["deployment"] == deployment

        errors = browser_errors(drv)
        drv.execute_script("document.getElementById('scroller').scrollLeft = 0")
        shot = screenshot(drv, "watch-ui.png")
        assert shot.stat().st_size > 10_000
        assert not errors, errors


def test_the_page_needs_the_directors_credentials(lab: Lab) -> None:
    status, _, headers = lab.request("GET", "/watch/ui", auth=None)
    assert status == 401 and "Basic" in headers.get("WWW-Authenticate", ""), status
    status, body, headers = lab.request("GET", "/watch/ui/app.js")
    assert status == 200 and headers.get("Content-Type", "").startswith("text/javascript"), headers
    assert b"EventSource" in body
    status, _, _ = lab.request("GET", "/watch/ui/..%2F..%2Fconfig.py")
    assert status == 404
