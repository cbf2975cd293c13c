"""Rendering an instance's job templates (Ruby ERB, as the 2013 director did to compute its hashes) and
BOSH's ``configuration_hash`` / ``template_hashes`` over the result."""
from __future__ import annotations

import asyncio
import hashlib
from typing import Any

from boshlab.erb import JobTemplates, TemplateError, render

from .planner import DesiredInstance
from .store import ReleaseJobRow

RENDER_CONCURRENCY = 4           # ruby processes at once


class RenderError(Exception):
    """A template of an instance cannot be rendered; the text names the instance, job, template, property."""


def configuration_hash(rendered: dict[str, dict[str, str]],
                       jobs: dict[str, ReleaseJobRow]) -> tuple[str, dict[str, str]]:
    """BOSH's hashes: ``configuration_hash`` over the jobs sorted by name (monit, name, then each template's
    content and destination sorted by source); ``template_hashes[job]`` over monit then each template."""
    config = hashlib.sha1()
    per_job: dict[str, str] = {}
    for name in sorted(rendered):
        out = rendered[name]
        job = jobs[name]
        t = hashlib.sha1()
        config.update(out["monit"].encode())
        config.update(name.encode())
        t.update(out["monit"].encode())
        for src in sorted(job.spec["templates"]):
            config.update(out[src].encode())
            config.update(job.spec["templates"][src].encode())
            t.update(out[src].encode())
        per_job[name] = t.hexdigest()
    return config.hexdigest(), per_job


class Renderer:
    """Renders instances, at most RENDER_CONCURRENCY Ruby processes at once."""

    def __init__(self, jobs: dict[str, ReleaseJobRow], concurrency: int = RENDER_CONCURRENCY) -> None:
        self.jobs = jobs
        self._sem = asyncio.Semaphore(concurrency)

    async def render(self, inst: DesiredInstance) -> None:
        """Render every template and monit file of the instance's jobs; set the spec's hashes."""
        names = [r.name for r in inst.group.jobs]
        job_templates = [JobTemplates(n, {"monit": self.jobs[n].monit, **self.jobs[n].templates}) for n in names]
        spec: dict[str, Any] = dict(inst.spec)
        try:
            async with self._sem:
                rendered = await render(job_templates, spec)
        except TemplateError as e:
            raise RenderError(f"Unable to render templates for instance {inst.group.name}/{inst.index}: {e}") from None
        inst.spec["configuration_hash"], inst.spec["template_hashes"] = configuration_hash(
            rendered, {n: self.jobs[n] for n in names})
