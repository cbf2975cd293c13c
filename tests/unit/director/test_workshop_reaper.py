"""The director's start-up work (director/workshop.py) and the compose reaper (director/reaper.py), on a whole
director in-process (fake CPI whose VMs run the real agent, real nats-server and nginx DAV): a deployment whose
VMs are gone is deployed again as it was (its pinned release versions), a locked deployment is left alone, the
workshop uploads and deploys its release once; the reaper deletes every VM of the lab even when one fails."""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from director import reaper, workshop
from director.tasks import Task
from tests.support.director_harness import DUMMY_RELEASE, Director, dummy_manifest
from tests.unit.director.conftest import Directors


async def deploy_tasks(d: Director) -> list[dict[str, object]]:
    return [t for t in await d.ops.recent_tasks(100, None) if t["description"] == "create deployment"]


async def lose_vms(d: Director, deployment: str) -> list[str]:
    """The deployment's VMs are deleted behind the director's back (``docker compose down``), and the
    director notices at start-up (reconcile): its instances have no VM."""
    cids = [r.vm_cid for r in await d.instances(deployment) if r.vm_cid]
    for cid in cids:
        await d.cpi.delete_vm(cid)
    await d.ops.reconcile()
    assert all(r.vm_cid is None for r in await d.instances(deployment))
    return cids


async def test_redeploy_missing_deploys_again_with_the_pinned_releases(director: Director) -> None:
    await director.deploy(dummy_manifest("lost", instances=2))
    await director.deploy(dummy_manifest("kept"))
    await director.upload_release(version="2")        # "latest" is 2 now; "lost" was deployed with 1
    kept_vm = (await director.instances("kept"))[0].vm_cid
    old = await lose_vms(director, "lost")
    assert await director.ops.deployments_missing_vms() == ["lost"]
    before = len(await deploy_tasks(director))

    await workshop.redeploy_missing(director.ops)

    rows = await director.instances("lost")
    assert len(rows) == 2 and all(r.vm_cid in director.cpi.vms and r.vm_cid not in old for r in rows)
    assert all(r.state == "started" for r in rows)
    dep = await director.lab.store.deployments.get("lost")
    assert dep is not None and dep.releases == {"dummy": "1"}, "the versions it had, not the latest"
    tasks = await deploy_tasks(director)
    assert len(tasks) == before + 1 and tasks[0]["deployment"] == "lost" and tasks[0]["state"] == "done"
    assert (await director.instances("kept"))[0].vm_cid == kept_vm, "a deployment with its VMs is not touched"
    assert await director.ops.deployments_missing_vms() == []


async def test_deploy_and_wait_leaves_a_locked_deployment_alone(director: Director,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    release = asyncio.Event()

    async def hold(task: Task) -> str:
        await release.wait()
        return "held"
    holder = await director.ops.tasks.start("hold the lock", hold, "busy", lock=True)
    before = len(await deploy_tasks(director))
    with caplog.at_level(logging.INFO, logger="director.workshop"):
        await asyncio.wait_for(workshop.deploy_and_wait(director.ops, "reconcile", dummy_manifest("busy"), "busy"), 10)
    assert f"reconcile: Deployment 'busy' is locked by task {holder}" in caplog.text
    assert len(await deploy_tasks(director)) == before, "no deploy task was started"
    release.set()
    assert await director.run_task(holder) == "held"

    with caplog.at_level(logging.INFO, logger="director.workshop"):
        await workshop.deploy_and_wait(director.ops, "someone", dummy_manifest("busy"), "busy")
    last = [r.getMessage() for r in caplog.records if r.name == "director.workshop"][-1]
    assert last.startswith("someone: task ") and " done: " in last, last
    assert len(await director.instances("busy")) == 1


async def test_after_start_without_the_workshop_only_redeploys(director: Director) -> None:
    await director.deploy(dummy_manifest("back"))
    await lose_vms(director, "back")
    assert director.config.workshop is False
    cfg = replace(director.config, workshop_dir="/nonexistent-workshop")   # would fail if it were used
    await workshop.after_start(director.ops, cfg)
    assert [r["name"] for r in await director.ops.releases()] == ["dummy"], "no workshop release uploaded"
    row, = await director.instances("back")
    assert row.vm_cid in director.cpi.vms


async def test_after_start_logs_a_failure_and_does_not_raise(director: Director, monkeypatch: pytest.MonkeyPatch,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    async def broken() -> list[str]:
        raise RuntimeError("the database is gone")
    monkeypatch.setattr(director.ops, "deployments_missing_vms", broken)
    with caplog.at_level(logging.ERROR, logger="director.workshop"):
        await workshop.after_start(director.ops, director.config)
    rec, = [r for r in caplog.records if r.name == "director.workshop"]
    assert rec.getMessage() == "start-up work failed" and rec.exc_info and "database is gone" in caplog.text


def workshop_tree(root: Path, manifest: str) -> Path:
    """A workshop dir as the image ships it, with the light dummy release as its sample release."""
    shutil.copytree(DUMMY_RELEASE, root / "release")
    (root / "manifests").mkdir(parents=True)
    (root / "manifests" / "redis-solo.yml").write_text(manifest)
    return root


async def test_the_workshop_uploads_and_deploys_once(directors: Directors, tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    d = await directors.make(upload=False)
    root = workshop_tree(tmp_path / "workshop", dummy_manifest("redis-solo"))
    cfg = replace(d.config, workshop=True, workshop_dir=str(root), workshop_blobs=str(tmp_path / "blobs"))
    with caplog.at_level(logging.INFO, logger="director.workshop"):
        await workshop.after_start(d.ops, cfg)
    rels = await d.ops.releases()
    assert [r["name"] for r in rels] == ["dummy"] and rels[0]["release_versions"][0]["currently_deployed"]
    row, = await d.instances("redis-solo")
    assert row.vm_cid in d.cpi.vms and row.state == "started"
    assert "workshop: deploying redis-solo" in caplog.text

    # the next start: the release is uploaded again (same content), the user's deployment is kept as it is
    (root / "manifests" / "redis-solo.yml").write_text(dummy_manifest("redis-solo", instances=3))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="director.workshop"):
        await workshop.after_start(d.ops, cfg)
    assert "redis-solo is deployed already" in caplog.text
    assert [r.vm_cid for r in await d.instances("redis-solo")] == [row.vm_cid], "not deployed again"
    assert len(await deploy_tasks(d)) == 1


async def test_the_workshop_names_a_release_it_cannot_make(directors: Directors, tmp_path: Path,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    d = await directors.make(upload=False)
    cfg = replace(d.config, workshop=True, workshop_dir=str(tmp_path / "empty"), workshop_blobs=str(tmp_path))
    (tmp_path / "empty").mkdir()
    with caplog.at_level(logging.INFO, logger="director.workshop"):
        await workshop.run_workshop(d.ops, cfg)
    assert "workshop: cannot create the sample release" in caplog.text
    assert await d.ops.recent_tasks(10, None) == [], "no task was started"


async def test_the_workshop_stops_when_the_upload_fails(directors: Directors, tmp_path: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    d = await directors.make(upload=False)
    root = workshop_tree(tmp_path / "workshop", dummy_manifest("redis-solo"))
    spec = root / "release" / "jobs" / "dummy" / "spec"
    spec.write_text(spec.read_text().replace("- dummy-pkg", "- dummy-pkg\n- a-package-nobody-ships"))
    cfg = replace(d.config, workshop=True, workshop_dir=str(root), workshop_blobs=str(tmp_path / "blobs"))
    with caplog.at_level(logging.INFO, logger="director.workshop"):
        await workshop.run_workshop(d.ops, cfg)
    assert "workshop: deploying" not in caplog.text
    assert await deploy_tasks(d) == []
    assert await d.lab.store.deployments.get("redis-solo") is None


# --- the reaper --------------------------------------------------------------------------------------------


async def test_reap_deletes_every_vm_and_the_labs_networks(director: Director, monkeypatch: pytest.MonkeyPatch,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    await director.deploy(dummy_manifest("reaped", instances=3))
    cids = [r.vm_cid for r in await director.instances("reaped") if r.vm_cid]
    assert len(cids) == 3
    await director.cpi.ensure_network(ipaddress.IPv4Network("10.77.0.0/24"), ipaddress.IPv4Address("10.77.0.1"))
    stuck = cids[1]
    real_delete = director.cpi.delete_vm

    async def delete_vm(cid: str) -> None:
        if cid == stuck:
            raise RuntimeError("device or resource busy")
        await real_delete(cid)
    monkeypatch.setattr(director.cpi, "delete_vm", delete_vm)
    with caplog.at_level(logging.WARNING, logger="reaper"):
        vms, nets = await reaper.reap(director.cpi)
    assert (vms, nets) == (3, 1)
    assert list(director.cpi.vms) == [stuck], "the VM that could not go did not keep the others"
    assert f"could not delete VM {director.cpi.vms[stuck].name}: device or resource busy" in caplog.text
    assert director.cpi.removed_networks == ["fake-lab-net-10.77.0.0-24"]
    monkeypatch.undo()
    assert await reaper.reap(director.cpi) == (1, 0)
    assert director.cpi.vms == {}


async def test_the_reaper_keeps_the_vms_while_the_director_runs(director: Director, monkeypatch: pytest.MonkeyPatch
                                                                ) -> None:
    await director.deploy(dummy_manifest("owned"))
    asked: list[tuple[str, str]] = []
    loaded: list[str] = []

    def running(project: str, service: str) -> bool:
        asked.append((project, service))
        return service == "director"

    def load(name: str, settings: object) -> object:
        loaded.append(name)
        return director.cpi
    monkeypatch.setattr(reaper, "compose_project", lambda env: env or "mylab")
    monkeypatch.setattr(reaper, "service_running", running)
    monkeypatch.setattr(reaper, "load", load)
    monkeypatch.setattr(asyncio.get_running_loop(), "add_signal_handler", lambda sig, cb: cb())   # stop at once
    monkeypatch.setenv("COMPOSE_PROJECT_NAME", "")
    monkeypatch.setenv("BOSH_LAB_CPI", "tests.support.fake_cpi")
    monkeypatch.delenv("BOSH_LAB_DIRECTOR_SERVICE", raising=False)

    assert await reaper.main() == 0
    assert asked == [("mylab", "director")] and loaded == [] and len(director.cpi.vms) == 1

    monkeypatch.setenv("BOSH_LAB_DIRECTOR_SERVICE", "director-2")   # that service is not running: reap
    assert await reaper.main() == 0
    assert loaded == ["tests.support.fake_cpi"] and director.cpi.vms == {}
    assert asked[-1] == ("mylab", "director-2")
