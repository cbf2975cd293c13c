"""Blobs at the machine's speed: the agent's DAV client (boshlab/dav.py, the code in the stemcell) against curl,
same nginx blobstore, same ~100 MB blob, same VM; and the director's memory while a release with a ~100 MB
package is uploaded to it.

    python bench/blobs.py [--mib 100] [--rounds 5] [--json FILE]

In the VM (redis/0 of the workshop lab), with the agent's credentials from its settings: ``put_file`` and
``get_file`` (sha1 checked, as the agent always does) vs ``curl -T`` and ``curl -o``, alternated, each round
on a file in page cache. Figures (throughput, MB/s; goal ≥ 0.9× curl):

* ``blob GET by agent``, ``blob PUT by agent``;
* ``director RSS growth, release upload``: the director's peak RSS (VmRSS sampled every 10 ms from /proc on
  the host) during a ``POST /releases`` of a ~100 MB package and its task, less its RSS before; the baseline
  is the package's size (the director must stream it, never hold it: goal ≤ 0.1× of the blob)."""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._lab import BenchLab, host_pid, on_workshop_lab, rss_kib, workshop_lab  # noqa: E402
from bench.figures import Figure, dumps, figure, table  # noqa: E402
from boshlab.dav import DavClient, DavConfig  # noqa: E402

TMP = "/var/vcap/data/tmp/bench-blobs"

# Runs in the VM with the agent's venv and code. argv: source file, rounds. Prints JSON: seconds per try.
IN_VM = r'''
import asyncio, json, os, subprocess, sys, time, uuid
sys.path.insert(0, "/var/vcap/bosh/lib")
from boshlab.dav import DavClient, DavConfig, sha1_file
opts = json.load(open("/var/vcap/bosh/settings.json"))["blobstore"]["options"]
cfg = DavConfig.from_options(opts)
src, rounds, tmp = sys.argv[1], int(sys.argv[2]), os.path.dirname(sys.argv[1])
sha1 = sha1_file(src)
out = {"agent_put": [], "agent_get": [], "curl_put": [], "curl_get": [], "ids": []}

async def agent_put():
    async with DavClient(cfg) as dav:
        t = time.perf_counter()
        blob_id, digest = await dav.put_file(src)
        out["agent_put"].append(time.perf_counter() - t)
    assert digest == sha1, (digest, sha1)
    out["ids"].append(blob_id)
    return blob_id

async def agent_get(blob_id):
    dest = os.path.join(tmp, "agent.get")
    async with DavClient(cfg) as dav:
        t = time.perf_counter()
        await dav.get_file(blob_id, dest, sha1)
        out["agent_get"].append(time.perf_counter() - t)
    os.unlink(dest)

def curl(*args):
    subprocess.run(["curl", "-sS", "--fail", "-u", f"{cfg.user}:{cfg.password}", *args], check=True, timeout=600)

def curl_put():
    blob_id = str(uuid.uuid4())
    url = DavClient(cfg).url(blob_id)
    t = time.perf_counter()
    curl("-T", src, url)
    out["curl_put"].append(time.perf_counter() - t)
    out["ids"].append(blob_id)
    return blob_id

def curl_get(blob_id):
    dest = os.path.join(tmp, "curl.get")
    t = time.perf_counter()
    curl("-o", dest, DavClient(cfg).url(blob_id))
    out["curl_get"].append(time.perf_counter() - t)
    os.unlink(dest)

for i in range(rounds):
    if i % 2 == 0:
        a = asyncio.run(agent_put()); c = curl_put()
        asyncio.run(agent_get(a)); curl_get(c)
    else:
        c = curl_put(); a = asyncio.run(agent_put())
        curl_get(c); asyncio.run(agent_get(a))
print(json.dumps(out))
'''


def transfers(lab: BenchLab, cid: str, mib: int, rounds: int) -> dict[str, Any]:
    lab.vm_exec(cid, f"rm -rf {TMP} && mkdir -p {TMP} && head -c {mib}M /dev/urandom > {TMP}/blob", timeout=120)
    try:
        out = lab.vm_exec(cid, f"PYTHONPATH=/var/vcap/bosh/lib /var/vcap/bosh/venv/bin/python - {TMP}/blob {rounds}",
                          timeout=120 + rounds * 120, stdin=IN_VM)
        result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        return result
    finally:
        lab.vm_exec(cid, f"rm -rf {TMP}", timeout=60)


async def delete_blobs(lab: BenchLab, ids: list[str]) -> None:
    """The agent may not delete blobs: the director's user does (the blobstore's port on the host)."""
    cfg = DavConfig(lab.blobstore_url(), "director", os.environ.get("BOSH_LAB_BLOBSTORE_DIRECTOR_PASSWORD", "director"))
    async with DavClient(cfg) as dav:
        for blob_id in ids:
            await dav.delete(blob_id)


def big_release(where: Path, mib: int, version: str) -> Path:
    """A release whose one package holds ``mib`` MiB of random bytes (incompressible: the tarball is as big)."""
    from boshlab.release import create_release
    src = where / "src"
    (src / "packages" / "big").mkdir(parents=True)
    (src / "blobs" / "big").mkdir(parents=True)
    (src / "config").mkdir()
    (src / "config" / "final.yml").write_text("name: bench-big\n")
    (src / "packages" / "big" / "spec").write_text("---\nname: big\ndependencies: []\nfiles:\n- big/*\n")
    (src / "packages" / "big" / "packaging").write_text("set -e\ncp -a big \"$BOSH_INSTALL_TARGET\"/\n")
    (src / "jobs").mkdir()
    with open(src / "blobs" / "big" / "blob.bin", "wb") as f:
        for _ in range(mib):
            f.write(os.urandom(1 << 20))
    out = where / "bench-big.tgz"
    create_release(src, out, version=version)
    return out


def director_upload_rss(lab: BenchLab, mib: int) -> tuple[float, float]:
    """(peak RSS growth of the director during the upload and its task, MiB; tarball size, MiB)."""
    pid = host_pid(lab.container("director"))
    with tempfile.TemporaryDirectory(dir=ROOT / ".pytest_cache" if (ROOT / ".pytest_cache").is_dir() else None) as d:
        tarball = big_release(Path(d), mib, f"1.{int(time.time())}")
        size = tarball.stat().st_size / 2**20
        before = rss_kib(pid)[0]
        peak = before
        stop = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not stop.is_set():
                peak = max(peak, rss_kib(pid)[0])
                stop.wait(0.01)
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            task = lab.director.upload("/releases", tarball)
            lab.task_ok(task, interval=0.1)
        finally:
            stop.set()
            sampler.join(timeout=5)
    return (peak - before) / 1024, size


def measure_lab(lab: BenchLab, mib: int, rounds: int) -> list[Figure]:
    cid = str(lab.instances("redis-solo")[0]["vm_cid"])
    got = transfers(lab, cid, mib, rounds)
    try:
        asyncio.run(delete_blobs(lab, got["ids"]))
    except Exception as e:  # noqa: BLE001 - leftovers go with the lab; say so and go on
        print(f"bench blobs: could not delete the bench's blobs: {e}", file=sys.stderr)
    mb = mib * 2**20 / 1e6

    def rate(key: str) -> float:
        return mb / float(statistics.median(got[key]))

    def note(a: str, c: str) -> str:
        return (f"{mib} MiB, median of {rounds}; agent {', '.join(f'{x:.2f}' for x in got[a])} s; "
                f"curl {', '.join(f'{x:.2f}' for x in got[c])} s")
    figures = [figure("blob GET by agent", "MB/s", rate("agent_get"), rate("curl_get"), "curl -o, same VM", 0.9,
                      "higher", note("agent_get", "curl_get")),
               figure("blob PUT by agent", "MB/s", rate("agent_put"), rate("curl_put"), "curl -T, same VM", 0.9,
                      "higher", note("agent_put", "curl_put"))]
    growth, size = director_upload_rss(lab, mib)
    figures.append(figure("director RSS growth, release upload", "MiB", max(growth, 0.0), size,
                          "the release's size", 0.1, note="peak VmRSS during POST /releases and its task, less before"))
    return figures


def measure(quick: bool) -> list[Figure]:
    with workshop_lab() as lab:
        return measure_lab(lab, 100, 2 if quick else 5)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--mib", type=int, default=100)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--project", help="a running lab's compose project (default: a lab of its own)")
    p.add_argument("--json", help="write the figures to this file")
    a = p.parse_args()
    figures: list[Figure] = on_workshop_lab(a.project, lambda lab: measure_lab(lab, a.mib, a.rounds))
    print(table(figures))
    if a.json:
        Path(a.json).write_text(dumps(figures))


if __name__ == "__main__":
    main()
