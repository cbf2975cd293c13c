"""Issue 9: the workshop proves itself. Every chapter of workshop/chapters runs exactly as written (its ```sh
blocks, extracted from the Markdown by workshop/play.py, the same code a person runs), against the session's
lab, in order; each ```expected block is checked against its command's output. A chapter that drifts from the
lab fails here, naming the chapter, the block and its line."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.workshop_play import load

from .conftest import ROOT, Lab

pytestmark = pytest.mark.e2e


play = load()
CHAPTERS = play.chapters()


def test_there_are_chapters_for_the_deck_and_for_game_days() -> None:
    names = [c.name for c in CHAPTERS]
    for want in ("cast", "agent-logs", "boot", "ping", "apply-sequence", "apply-spec", "blobs", "job-blob",
                 "properties", "gameday-failing-job", "gameday-unresponsive-agent", "gameday-slow-drain",
                 "gameday-missing-vm"):
        assert any(n.endswith(want) for n in names), f"no chapter for {want}: {names}"
    for c in CHAPTERS:
        assert c.blocks, f"{c.name} has no commands"
        assert any(b.expected for b in c.blocks), f"{c.name} checks no output"


@pytest.fixture(scope="module")
def lab_as_up_left_it(lab: Lab) -> Lab:
    """The chapters start where chapter 0 leaves a learner: the deck's redis-solo deployed by `docker compose up`,
    no fault active. Earlier tests of the session redeploy redis-solo with the overrides manifest (so a chapter's
    own overrides deploy would change nothing) and inject faults; put the lab back the way a learner finds it."""
    status, body, _ = lab.request("DELETE", "/faults")
    assert status == 200, body
    task = lab.deploy((ROOT / "workshop" / "manifests" / "redis-solo.yml").read_text())
    assert task["state"] == "done", task
    assert lab.instance()["process_state"] == "running"
    return lab


@pytest.mark.parametrize("chapter", CHAPTERS, ids=[c.name for c in CHAPTERS])
def test_chapter_runs_as_written(lab_as_up_left_it: Lab, chapter: object, tmp_path: Path) -> None:
    lab = lab_as_up_left_it
    outcomes = play.run_chapter(chapter, dict(lab.env))
    failed = [o for o in outcomes if not o.ok]
    assert not failed, (f"{failed[0].chapter} block {failed[0].block} (line {failed[0].line}): {failed[0].problem}\n"
                        + "\n".join(failed[0].output.splitlines()[-40:]))
    assert len(outcomes) == len(chapter.blocks)  # type: ignore[attr-defined]
