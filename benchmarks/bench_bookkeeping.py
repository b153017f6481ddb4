"""Bookkeeping cost of one per-video stage per video, from 2k to 200k videos, on local disk or S3.

A scale simulation: N manifest rows, an upstream stage whose index gives every video's identity, and one
per-video stage whose computation is trivial (each video commits the CRC-32 of a 16-byte array and no array
is written), so what is timed is the stage's bookkeeping alone, through the project's own code in the order
``run_video_stage`` runs it: drop the index and list the commits once, map batches (one commit-record read
per video, its commit and inputs key), refresh the manifest's status column and write the stage's index;
then read a downstream stage's fingerprints of all N videos. It runs twice: a first run computing every
video, and a resumed run that finds them all committed. Prefect's own cost per task run (one per batch, a few
API calls) is not in these figures. The reference in the same run is the cost of one commit-marker write per
video (the least a per-video commit can cost on that store). Run::

    python benchmarks/bench_bookkeeping.py --videos 2000 --videos 20000 --videos 200000
    python benchmarks/bench_bookkeeping.py --moto --videos 1000 --videos 4000   # S3 API on 127.0.0.1
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pandas as pd

from motionfit.storage import fs
from motionfit.storage.arrays import array_checksum
from motionfit.storage.layout import RunLayout
from motionfit.storage.manifest import BASE_COLUMNS, refresh_stage_status, save_manifest, status_column
from motionfit.storage.markers import compact_record
from motionfit.tasks.per_video import inputs_key, map_videos

UPSTREAM, STAGE = "decode", "flow"


def manifest_of(n_videos: int) -> pd.DataFrame:
    """A manifest of ``n_videos`` unlabelled source videos, as ingest writes it."""
    ids = [f"source.video_{i:07d}" for i in range(n_videos)]
    columns = {"video_id": ids, "dataset": "source", "path": [f"/data/{v}.mp4" for v in ids]}
    columns |= {"label": None, "label_index": -1, "split": "unlabelled", "status": "ok", "error": None}
    return pd.DataFrame(columns, columns=list(BASE_COLUMNS))


def write_upstream(layout: RunLayout, video_ids: list[str]) -> None:
    """The upstream stage's index (its markers are not needed by the simulated stage)."""
    records = {v: {"identity": f"crc32:{i:08x}", "shape": [64, 128, 171, 3]} for i, v in enumerate(video_ids)}
    layout.markers(UPSTREAM).write_index(records)


def run_stage(layout: RunLayout, manifest: pd.DataFrame, batch: int) -> dict[str, float]:
    """One simulated stage run; seconds of each part."""
    video_ids = list(manifest["video_id"])
    markers = layout.markers(STAGE)
    payload = np.arange(16, dtype=np.uint8)
    seconds: dict[str, float] = {}

    start = time.perf_counter()
    markers.drop_index()
    committed = markers.committed_ids()
    upstream = layout.markers(UPSTREAM).identities(video_ids)
    seconds["stage start (1 listing, upstream index)"] = time.perf_counter() - start

    def process(video_id: str) -> None:
        markers.commit(video_id, {"shape": [16], "dtype": "uint8", "checksum": array_checksum(payload)})

    start = time.perf_counter()
    records = {}
    for first in range(0, len(video_ids), batch):
        group = video_ids[first : first + batch]
        outcomes = map_videos(group, markers, process, lambda v: inputs_key("bench", upstream[v]))
        records.update((o.video_id, o.record) for o in outcomes)
    seconds["batches (per-video reads and commits)"] = time.perf_counter() - start

    start = time.perf_counter()
    manifest = refresh_stage_status(manifest, markers, video_ids)
    save_manifest(layout, manifest)
    done = manifest.loc[manifest[status_column(STAGE)].eq("done"), "video_id"]
    markers.write_index({v: records[v] for v in done})
    seconds["stage end (1 listing, manifest, index)"] = time.perf_counter() - start

    start = time.perf_counter()
    identities = markers.identities(video_ids)
    seconds["downstream fingerprints (index)"] = time.perf_counter() - start
    assert len(committed) in (0, len(video_ids)), "a first run finds no commit, a resumed one finds them all"
    assert len(identities) == len(video_ids) and None not in identities.values()
    return seconds


def marker_write_reference(layout: RunLayout, n_videos: int) -> float:
    """Seconds per video of one commit-marker write on this store (the floor of any per-video commit)."""
    markers = layout.markers("reference")
    record = compact_record({"time": 0.0})
    start = time.perf_counter()
    for i in range(n_videos):
        markers.commit(f"v{i:07d}", record)
    return (time.perf_counter() - start) / n_videos


@contextmanager
def moto_server() -> Iterator[str]:
    """moto's S3 server (the dev extra) on a free port of 127.0.0.1, with a bucket; stopped by its PID."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(endpoint, timeout=2).close()
                break
            except OSError:
                time.sleep(0.2)
        os.environ.update(
            AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1"
        )
        os.environ["AWS_ENDPOINT_URL"] = endpoint
        import boto3

        boto3.client("s3").create_bucket(Bucket="motionfit-bench")
        yield "s3://motionfit-bench"
    finally:
        os.kill(process.pid, 15)
        process.wait(timeout=30)


def bench(root: str, n_videos: int, batch: int) -> dict[str, object]:
    run_root = fs.join(root, f"bookkeeping-{n_videos}-{uuid.uuid4().hex[:6]}")
    layout = RunLayout.at(run_root)
    manifest = manifest_of(n_videos)
    save_manifest(layout, manifest)
    write_upstream(layout, list(manifest["video_id"]))
    first = run_stage(layout, manifest, batch)
    resumed = run_stage(layout, manifest, batch)
    reference = marker_write_reference(layout, min(n_videos, 2000))
    fs.remove(run_root)
    return {"first": first, "resumed": resumed, "reference_ms": 1000 * reference}


def report(n_videos: int, root: str, result: dict[str, object]) -> dict[str, float]:
    """Print ``result``; returns ms per video of the first and the resumed run."""
    print(f"\n{n_videos} videos on {root} (ms per video; trivial per-video computation, no arrays):")
    totals = {}
    for run in ("first", "resumed"):
        parts = result[run]
        totals[run] = 1000 * sum(parts.values()) / n_videos
        print(f"  {run} run: {totals[run]:.3f}")
        for part, seconds in parts.items():
            print(f"    {part:44s} {1000 * seconds / n_videos:8.3f}")
    print(f"  reference, one commit-marker write: {result['reference_ms']:.3f}")
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--videos", type=int, action="append", help="manifest rows (repeatable)")
    parser.add_argument("--run-root", help="parent URL of the simulated run roots (default: a temp dir)")
    parser.add_argument("--moto", action="store_true", help="run on moto's S3 server on 127.0.0.1")
    parser.add_argument("--batch", type=int, default=16, help="videos per batch (runtime.videos_per_batch)")
    parser.add_argument(
        "--json", action="store_true", help="last line: JSON of the last size (first run's ms per video)"
    )
    args = parser.parse_args()
    sizes = args.videos or [2000, 20000]
    with moto_server() if args.moto else _root(args.run_root) as root:
        results = []
        for n_videos in sizes:
            totals = report(n_videos, root, bench(root, n_videos, args.batch))
            results.append(
                {
                    "videos": n_videos,
                    "per_video_ms": round(totals["first"], 4),
                    "resumed_per_video_ms": round(totals["resumed"], 4),
                    "root": root,
                }
            )
    if args.json:
        print(json.dumps(results[-1]))


@contextmanager
def _root(url: str | None) -> Iterator[str]:
    if url is not None:
        yield url
        return
    folder = tempfile.mkdtemp(prefix="motionfit-bookkeeping-")
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
