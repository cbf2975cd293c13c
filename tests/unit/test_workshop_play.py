"""workshop/play.py, which CI uses to run every chapter as written: parsing chapters, matching expected
output, and running blocks in one shell (state kept, failures caught, stdin not swallowed, deadlines)."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.workshop_play import load

ROOT = Path(__file__).resolve().parents[2]


play = load()

CHAPTER = """# 3. Boot

Some context.

```sh
x=41
echo "answer $((x + 1))"
```
```expected
answer 42
```

More words.

```sh timeout=5
echo "x is still $x"
```
"""


def test_parse_finds_blocks_expected_lines_options_and_prose() -> None:
    ch = play.parse(CHAPTER, Path("03-boot.md"))
    assert ch.title == "3. Boot"
    assert [b.line for b in ch.blocks] == [5, 15]
    assert ch.blocks[0].expected == ["answer 42"]
    assert ch.blocks[0].prose == "Some context."
    assert ch.blocks[1].timeout == 5.0 and ch.blocks[1].expected == []


@pytest.mark.parametrize("text, problem", [
    ("```sh\necho\n", "never closed"),
    ("```expected\nx\n```\n", "must follow a ```sh block"),
    ("```sh retries=3\necho\n```\n", "unknown block option"),
])
def test_malformed_chapters_name_the_line(text: str, problem: str) -> None:
    with pytest.raises(play.ChapterError, match=problem) as e:
        play.parse(text, Path("bad.md"))
    assert "bad.md:1" in str(e.value)


def test_expected_lines_in_order_with_wildcards_and_colour_stripped() -> None:
    out = "first\n\x1b[32mredis/abc running\x1b[0m\nthird line here\n"
    assert play.missing_lines(["redis/...running", "third...here"], out) == []
    assert play.missing_lines(["third", "first"], out) == ["first"]
    assert play.missing_lines(["nothing like it"], out) == ["nothing like it"]


def test_a_chapter_runs_in_one_shell_and_keeps_its_variables(tmp_path: Path) -> None:
    ch = play.parse(CHAPTER, tmp_path / "03-boot.md")
    outcomes = play.run_chapter(ch, {"PATH": "/usr/bin:/bin"})
    assert [o.ok for o in outcomes] == [True, True]
    assert outcomes[1].output.strip() == "x is still 41"


def test_a_failing_command_anywhere_in_a_block_fails_it_and_stops_the_chapter(tmp_path: Path) -> None:
    ch = play.parse("```sh\nfalse\necho after\n```\n```sh\necho never\n```\n", tmp_path / "09-x.md")
    outcomes = play.run_chapter(ch, {"PATH": "/usr/bin:/bin"})
    assert len(outcomes) == 1 and not outcomes[0].ok
    assert outcomes[0].problem == "a command failed" and "after" in outcomes[0].output


def test_missing_expected_output_fails_the_block(tmp_path: Path) -> None:
    ch = play.parse("```sh\necho hello\n```\n```expected\ngoodbye\n```\n", tmp_path / "09-x.md")
    [o] = play.run_chapter(ch, {"PATH": "/usr/bin:/bin"})
    assert not o.ok and "goodbye" in o.problem


def test_commands_that_read_stdin_do_not_swallow_the_chapter(tmp_path: Path) -> None:
    ch = play.parse("```sh\ncat\necho one\n```\n```sh\necho two\n```\n```expected\ntwo\n```\n", tmp_path / "09-x.md")
    outcomes = play.run_chapter(ch, {"PATH": "/usr/bin:/bin"})
    assert [o.ok for o in outcomes] == [True, True]


def test_a_block_that_outlives_its_timeout_fails_by_name(tmp_path: Path) -> None:
    ch = play.parse("```sh timeout=1\nsleep 30\n```\n", tmp_path / "09-x.md")
    [o] = play.run_chapter(ch, {"PATH": "/usr/bin:/bin"})
    assert not o.ok and "did not finish within 1 s" in o.problem


def test_the_lab_has_chapters_and_each_parses() -> None:
    chapters = play.chapters()
    assert len(chapters) >= 13
    assert all(c.blocks for c in chapters)
    with pytest.raises(play.ChapterError, match="no chapter"):
        play.chapters(["99"])


def test_typing_mode_types_commands_and_narrates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ch = play.parse(CHAPTER, tmp_path / "03-boot.md")
    outcomes = play.run_chapter(ch, {"PATH": "/usr/bin:/bin"}, type_it=True, cps=10000, pause=0, narrate=True)
    assert all(o.ok for o in outcomes)
    out = capsys.readouterr().out
    assert "# Some context." in out and "$ x=41" in out and "answer 42" in out
