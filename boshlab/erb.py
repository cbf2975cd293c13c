"""Render job templates with Ruby's real ERB (``render.rb`` beside this file), through an asyncio subprocess."""
from __future__ import annotations

import asyncio
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RENDER_RB = Path(__file__).with_name("render.rb")


class TemplateError(Exception):
    """A template could not be rendered; names the job, the template and (if any) the missing property."""

    def __init__(self, job: str, template: str, message: str, prop: str | None = None) -> None:
        self.job, self.template, self.property, self.detail = job, template, prop, message
        if prop:
            text = f"Error filling in template '{template}' for job '{job}': property '{prop}' has no value and no default"
        else:
            text = f"Error filling in template '{template}' for job '{job}': {message}"
        super().__init__(text)


@dataclass
class JobTemplates:
    """What a job gives the renderer: its name and ``{template source name: ERB text}``."""
    name: str
    templates: dict[str, str]


def ruby() -> str:
    exe = os.environ.get("BOSH_LAB_RUBY") or shutil.which("ruby")
    if not exe:
        raise RuntimeError("ruby is not installed: it renders the ERB templates (apt-get install ruby)")
    return exe


async def render(jobs: list[JobTemplates], spec: dict[str, Any]) -> dict[str, dict[str, str]]:
    """Render every template of every job against ``spec`` (whose ``properties`` feed ``p``).
    Returns ``{job: {template: text}}``; raises TemplateError for the first failure."""
    payload = json.dumps({"spec": spec, "jobs": [{"name": j.name, "templates": j.templates} for j in jobs]})
    proc = await asyncio.create_subprocess_exec(
        ruby(), str(RENDER_RB), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate(payload.encode())
    if proc.returncode != 0:
        raise RuntimeError(f"ruby renderer failed (exit {proc.returncode}): {err.decode(errors='replace')[-2000:]}")
    result = json.loads(out)
    if "error" in result:
        e = result["error"]
        raise TemplateError(e["job"], e["template"], e["message"], e.get("property"))
    rendered: dict[str, dict[str, str]] = result["rendered"]
    return rendered
