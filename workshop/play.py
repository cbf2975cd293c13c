#!/usr/bin/env python3
"""Run or play the workshop's chapters, exactly as they are written.

    python3 workshop/play.py --list                 the chapters
    python3 workshop/play.py 03 --check             run chapter 03's commands, check the expected output
    python3 workshop/play.py 05 --type              screencast: type each command at a human pace, then run it
    python3 workshop/play.py --check                every chapter, in order

A chapter (workshop/chapters/NN-name.md) is Markdown. Its ```sh blocks are the commands; they run in order in
one bash session per chapter (so a variable set in one block is there in the next), from the repository's
root, with workshop/bin first on PATH (its `bosh-lab` runs the CLI in the lab's director container). A block
fails when any command in it fails. An ```expected block right after a ```sh block lists lines that must
appear in that block's output, in order; `...` in a line matches anything. A block can say how long it may
take: ```sh timeout=120 (seconds; default 60).

Screencast mode (--type) sets BOSH_LAB_SCREENCAST=1 (the CLI's output is then deterministic: no colour,
times relative to the first event), prints the chapter's prose as `#` comments with --narrate, types each
command at --cps characters per second with a fixed, seeded rhythm, and pauses --pause seconds after each
block, so a recording can be made again, the same, after every release of the lab.

Standard library only: it runs with the host's python3, no virtualenv needed.
"""
from __future__ import annotations

import argparse
import os
import random
import re
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = ROOT / "workshop" / "chapters"
DEFAULT_TIMEOUT = 60.0
MAX_OUTPUT = 4 << 20                 # bytes kept of one block's output
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
FENCE = re.compile(r"^```(\w*)(.*)$")


class ChapterError(Exception):
    pass


@dataclass
class Block:
    code: str
    line: int                        # the line of the chapter its fence opens on
    timeout: float = DEFAULT_TIMEOUT
    expected: list[str] = field(default_factory=list)
    prose: str = ""                  # the text before it (for --narrate)


@dataclass
class Chapter:
    path: Path
    title: str
    blocks: list[Block]

    @property
    def name(self) -> str:
        return self.path.stem


def parse(text: str, path: Path = Path("chapter.md")) -> Chapter:
    """The blocks of a chapter. A malformed chapter (an unclosed fence, an ```expected block with no ```sh
    block before it, a bad option) is an error naming the file and line."""
    lines = text.splitlines()
    title = next((ln.lstrip("# ").strip() for ln in lines if ln.startswith("# ")), path.stem)
    blocks: list[Block] = []
    prose: list[str] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            if lines[i].strip() and not lines[i].startswith("#"):
                prose.append(lines[i].strip())
            elif not lines[i].strip():
                prose.append("")
            i += 1
            continue
        lang, opts, start = m.group(1), m.group(2).strip(), i + 1
        body: list[str] = []
        i += 1
        while i < len(lines) and not lines[i].startswith("```"):
            body.append(lines[i])
            i += 1
        if i >= len(lines):
            raise ChapterError(f"{path}:{start}: the ``` block is never closed")
        i += 1
        if lang == "sh":
            timeout = DEFAULT_TIMEOUT
            for opt in opts.split():
                key, _, value = opt.partition("=")
                if key != "timeout" or not re.fullmatch(r"\d+(\.\d+)?", value):
                    raise ChapterError(f"{path}:{start}: unknown block option {opt!r} (only timeout=SECONDS)")
                timeout = float(value)
            text_before = " ".join(p for p in prose if p).strip()
            blocks.append(Block("\n".join(body), start, timeout, prose=text_before))
            prose = []
        elif lang == "expected":
            if not blocks or blocks[-1].expected:
                raise ChapterError(f"{path}:{start}: an ```expected block must follow a ```sh block")
            blocks[-1].expected = [ln.strip() for ln in body if ln.strip()]
    return Chapter(path, title, blocks)


def chapters(names: list[str] | None = None) -> list[Chapter]:
    paths = sorted(CHAPTERS.glob("[0-9][0-9]-*.md"))
    if names:
        chosen = []
        for n in names:
            hit = [p for p in paths if p.stem == n or p.stem.startswith(n.zfill(2) + "-") or p.name == n]
            if not hit:
                raise ChapterError(f"no chapter {n!r} in {CHAPTERS} (python3 workshop/play.py --list)")
            chosen.extend(hit)
        paths = chosen
    return [parse(p.read_text(), p) for p in paths]


def _pattern(line: str) -> re.Pattern[str]:
    return re.compile(".*?".join(re.escape(part) for part in line.split("...")))


def missing_lines(expected: list[str], output: str) -> list[str]:
    """The expected lines not found in ``output``, in order (each after the previous one's match)."""
    out = [ANSI.sub("", ln) for ln in output.splitlines()]
    pos = 0
    for k, want in enumerate(expected):
        pat = _pattern(want)
        for j in range(pos, len(out)):
            if pat.search(out[j]):
                pos = j + 1
                break
        else:
            return expected[k:]
    return []


class Shell:
    """One bash per chapter. Each block is sent on stdin and ended by a marker line carrying whether any
    command in it failed (bash's ERR trap), so state carries over from block to block."""

    MARK = "__bosh_lab_block_done__"

    def __init__(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(["bash", "--noprofile", "--norc"], cwd=ROOT, env=env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        self._buf = b""
        self._send("exec 2>&1; __failed=0; trap '__failed=1' ERR; set -o pipefail\n")

    def _send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text.encode())
        self.proc.stdin.flush()

    def run(self, code: str, timeout: float, echo: bool = False) -> tuple[bool, str]:
        """(ok, output) of one block; raises ChapterError when it outlives ``timeout``."""
        # stdin of the block's commands is /dev/null: the shell's own stdin is this script, not theirs
        self._send(f"__failed=0\n{{\n{code}\n}} < /dev/null\n__rc=$?; printf '\\n{self.MARK} %s %s\\n' \"$__failed\" \"$__rc\"\n")
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        out = bytearray()
        while True:
            if self.MARK.encode() in self._buf:
                before, _, rest = self._buf.partition(self.MARK.encode())
                status, _, self._buf = rest.partition(b"\n")
                out += before
                if echo:
                    sys.stdout.write(before.decode(errors="replace").rstrip("\n") + ("\n" if before.strip() else ""))
                    sys.stdout.flush()
                failed, rc = (status.split() + [b"1", b"1"])[:2]
                text = out.decode(errors="replace").rstrip("\n")
                return failed == b"0" and rc == b"0", text
            if echo and b"\n" in self._buf:        # stream whole lines while the block runs
                line, _, self._buf = self._buf.rpartition(b"\n")
                out += line + b"\n"
                sys.stdout.write(line.decode(errors="replace") + "\n")
                sys.stdout.flush()
            left = deadline - time.monotonic()
            if left <= 0:
                self.close()
                raise ChapterError(f"did not finish within {timeout:.0f} s; its output so far:\n"
                                   + (out + self._buf).decode(errors="replace")[-3000:])
            ready, _, _ = select.select([fd], [], [], min(left, 0.5))
            if ready:
                data = os.read(fd, 65536)
                if not data:
                    raise ChapterError("bash ended before the block did (an `exit` in the chapter?); output:\n"
                                       + (out + self._buf).decode(errors="replace")[-3000:])
                self._buf += data
                if len(out) + len(self._buf) > MAX_OUTPUT:
                    keep = self._buf[-MAX_OUTPUT // 2:]
                    out, self._buf = bytearray(b"[... output cut ...]\n"), keep

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(timeout=10)


def chapter_env(base: dict[str, str] | None = None, screencast: bool = False) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    env["PATH"] = f"{ROOT / 'workshop' / 'bin'}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}"
    if screencast:
        env.update(BOSH_LAB_SCREENCAST="1", NO_COLOR="1")
    return env


@dataclass
class Outcome:
    chapter: str
    block: int
    line: int
    ok: bool
    problem: str = ""
    output: str = ""


def run_chapter(ch: Chapter, env: dict[str, str] | None = None, *, type_it: bool = False, cps: float = 18.0,
                pause: float = 1.0, narrate: bool = False, seed: int = 7) -> list[Outcome]:
    """Runs every block of a chapter in order; stops at the first failure. Returns one outcome per block run."""
    shell = Shell(chapter_env(env, screencast=type_it))
    rhythm = random.Random(seed)
    outcomes: list[Outcome] = []
    try:
        for n, block in enumerate(ch.blocks, 1):
            if type_it:
                if narrate and block.prose:
                    for para in _wrap(block.prose, 100):
                        print(f"# {para}")
                for cmd in block.code.splitlines():
                    sys.stdout.write("$ ")
                    for ch_ in cmd:
                        sys.stdout.write(ch_)
                        sys.stdout.flush()
                        time.sleep(max(0.0, rhythm.gauss(1.0 / cps, 0.3 / cps)))
                    sys.stdout.write("\n")
                    sys.stdout.flush()
                    time.sleep(pause / 3)
            try:
                ok, output = shell.run(block.code, block.timeout, echo=type_it)
            except ChapterError as e:
                outcomes.append(Outcome(ch.name, n, block.line, False, str(e)))
                return outcomes
            if not ok:
                outcomes.append(Outcome(ch.name, n, block.line, False, "a command failed", output))
                return outcomes
            missing = missing_lines(block.expected, output)
            if missing:
                outcomes.append(Outcome(ch.name, n, block.line, False,
                                        "expected output not found: " + " | ".join(missing), output))
                return outcomes
            outcomes.append(Outcome(ch.name, n, block.line, True, output=output))
            if type_it:
                time.sleep(pause)
    finally:
        shell.close()
    return outcomes


def _wrap(text: str, width: int) -> list[str]:
    words, lines, cur = text.split(), [], ""
    for w in words:
        if cur and len(cur) + 1 + len(w) > width:
            lines.append(cur)
            cur = w
        else:
            cur = f"{cur} {w}".strip()
    return lines + ([cur] if cur else [])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="workshop/play.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("chapter", nargs="*", help="chapter numbers or names (default: all, in order)")
    p.add_argument("--list", action="store_true", help="list the chapters")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="run the commands and check their output (default)")
    mode.add_argument("--type", action="store_true", help="screencast: type the commands at a human pace")
    p.add_argument("--cps", type=float, default=18.0, help="characters per second when typing (default 18)")
    p.add_argument("--pause", type=float, default=1.5, help="seconds to pause after each block (default 1.5)")
    p.add_argument("--narrate", action="store_true", help="print the chapter's prose as # comments")
    args = p.parse_args(argv)
    try:
        chosen = chapters(args.chapter)
    except ChapterError as e:
        print(f"workshop/play.py: {e}", file=sys.stderr)
        return 2
    if args.list:
        for ch in chosen:
            print(f"{ch.name:<32} {ch.title}  ({len(ch.blocks)} blocks)")
        return 0
    failed = 0
    for ch in chosen:
        if args.type:
            print(f"# {ch.title}\n")
        outcomes = run_chapter(ch, type_it=args.type, cps=args.cps, pause=args.pause, narrate=args.narrate)
        bad = [o for o in outcomes if not o.ok]
        if bad:
            failed += 1
            o = bad[0]
            print(f"FAIL {ch.name} block {o.block} ({ch.path.relative_to(ROOT)}:{o.line}): {o.problem}", file=sys.stderr)
            if o.output:
                print("  | " + "\n  | ".join(o.output.splitlines()[-40:]), file=sys.stderr)
        elif not args.type:
            print(f"ok   {ch.name} ({len(outcomes)} blocks)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
