#!/usr/bin/env python
"""Load test of `eosdetect serve` on loopback: N requests, C at a time.

    python scripts/load_test.py                       # 200 requests, 8 concurrent, the shipped samples
    python scripts/load_test.py --images ../shared/data/bccd/images --requests 200 --concurrency 8

Starts the server in a child process (`python -m eosdetect serve`), waits for
/healthz, then posts images to /api/v1/count (with the overlay, as the web
page asks) from C threads. Prints the status codes, latency percentiles,
throughput, and the server's resident memory (sampled from /proc every 0.2 s)
after warm-up, half-way and at the end, so that a leak shows as growth.
Exit code 1 if any request failed or did not finish within --timeout seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", default=str(ROOT / "data" / "samples"), help="folder of images to post")
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2, help="the server's --workers")
    ap.add_argument("--queue", type=int, default=16, help="the server's --queue")
    ap.add_argument("--model", help="model name (default: the server's default)")
    ap.add_argument("--timeout", type=float, default=600, help="seconds allowed for the whole run")
    ap.add_argument("--json", help="also write the figures to this JSON file")
    args = ap.parse_args(argv)

    images = sorted(p for p in Path(args.images).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".tif"))
    if not images:
        ap.error(f"no images in {args.images}")
    payloads = [(p.name, p.read_bytes()) for p in images[:50]]

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-m", "eosdetect", "serve", "--port", str(port), "--workers", str(args.workers),
           "--queue", str(args.queue)]
    server = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        t_start = time.time()
        while True:
            if server.poll() is not None:
                print("server exited", file=sys.stderr)
                return 1
            try:
                if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
            if time.time() - t_start > 180:
                print("server did not start within 180 s", file=sys.stderr)
                return 1
        startup = time.time() - t_start
        rss_idle = rss_mb(server.pid)

        samples: list[tuple[int, float]] = []  # (requests done, rss)
        done = [0]
        stop = threading.Event()

        def sampler():
            while not stop.is_set():
                r = rss_mb(server.pid)
                if r is not None:
                    samples.append((done[0], r))
                time.sleep(0.2)

        threading.Thread(target=sampler, daemon=True).start()
        lock = threading.Lock()
        results = []
        local = threading.local()

        def one(i):
            if not hasattr(local, "client"):
                local.client = httpx.Client(timeout=args.timeout)
            name, data = payloads[i % len(payloads)]
            form = {"model": args.model} if args.model else {}
            t0 = time.perf_counter()
            try:
                r = local.client.post(url + "/api/v1/count?overlay=true", files={"image": (name, data)}, data=form)
                status, count = r.status_code, (r.json().get("count") if r.status_code == 200 else None)
            except httpx.HTTPError as exc:
                status, count = f"{type(exc).__name__}", None
            dt = time.perf_counter() - t0
            with lock:
                done[0] += 1
                results.append({"i": i, "image": name, "status": status, "seconds": dt, "count": count})

        t0 = time.time()
        with ThreadPoolExecutor(args.concurrency) as pool:
            list(pool.map(one, range(args.requests)))
        wall = time.time() - t0
        stop.set()
    finally:
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()

    statuses: dict[str, int] = {}
    for r in results:
        statuses[str(r["status"])] = statuses.get(str(r["status"]), 0) + 1
    lat = np.array([r["seconds"] for r in results if r["status"] == 200])
    by_image: dict[str, set] = {}
    for r in results:
        if r["count"] is not None:
            by_image.setdefault(r["image"], set()).add(r["count"])

    def rss_at(fraction):
        target = fraction * args.requests
        vals = [r for n, r in samples if n >= target]
        return round(vals[0], 1) if vals else None

    fig = {
        "requests": args.requests, "concurrency": args.concurrency, "workers": args.workers, "queue": args.queue,
        "images": len(payloads), "statuses": statuses, "startup_seconds": round(startup, 1),
        "wall_seconds": round(wall, 1), "requests_per_second": round(len(results) / wall, 2),
        "latency_seconds": {"p50": round(float(np.percentile(lat, 50)), 3), "p95": round(float(np.percentile(lat, 95)), 3),
                            "max": round(float(lat.max()), 3)} if len(lat) else None,
        "same_count_every_time": all(len(v) == 1 for v in by_image.values()),
        "server_rss_mb": {"idle_after_start": round(rss_idle, 1) if rss_idle else None, "after_10pct": rss_at(0.1),
                          "after_50pct": rss_at(0.5), "at_end": round(samples[-1][1], 1) if samples else None,
                          "max": round(max(r for _, r in samples), 1) if samples else None},
    }
    print(json.dumps(fig, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(fig, indent=2) + "\n")
    ok = statuses.get("200", 0) == args.requests and wall <= args.timeout and fig["same_count_every_time"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
