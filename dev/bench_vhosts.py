#!/usr/bin/env python3
"""Vhost creation per second, the bottleneck of a burst of sign-ups, on each broker setup:
sequential PUT /api/vhosts (one after the other, one connection) and concurrent (N at once, one
connection each, as N Lambdas would). Each broker is given as NAME=MANAGEMENT_URL; the vhosts
made are deleted again. Prints one JSON line per broker and mode, then a summary.

Usage: bench_vhosts.py --user U --password P [--sequential 50] [--concurrent 100] NAME=URL...
"""
import argparse
import base64
import json
import statistics
import threading
import time
import urllib.request
import uuid


def request(method, url, auth, timeout=120):
    req = urllib.request.Request(url, method=method, headers={"Authorization": auth, "content-type": "application/json"},
                                 data=b"{}" if method == "PUT" else None)
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.status


def sequential(base, auth, n, prefix):
    t0 = time.perf_counter()
    for i in range(n):
        request("PUT", f"{base}/api/vhosts/{prefix}-s{i}", auth)
    elapsed = time.perf_counter() - t0
    return {"mode": "sequential", "vhosts": n, "seconds": round(elapsed, 2), "per_second": round(n / elapsed, 1)}


def concurrent(base, auth, n, prefix):
    answered = [None] * n
    start = threading.Barrier(n + 1)

    def one(i):
        start.wait()
        t = time.perf_counter()
        request("PUT", f"{base}/api/vhosts/{prefix}-c{i}", auth)
        answered[i] = time.perf_counter() - t

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for th in threads:
        th.start()
    start.wait()
    t0 = time.perf_counter()
    for th in threads:
        th.join()
    elapsed = time.perf_counter() - t0
    done = [a for a in answered if a is not None]
    return {"mode": "concurrent", "vhosts": n, "seconds": round(elapsed, 2), "per_second": round(n / elapsed, 1),
            "answer_s_median": round(statistics.median(done), 2), "answer_s_max": round(max(done), 2),
            "answered_over_5s": sum(1 for a in done if a > 5)}


def cleanup(base, auth, prefix):
    with urllib.request.urlopen(urllib.request.Request(f"{base}/api/vhosts?columns=name", headers={"Authorization": auth})) as r:
        names = [v["name"] for v in json.load(r) if v["name"].startswith(prefix)]
    for name in names:
        request("DELETE", f"{base}/api/vhosts/{name}", auth)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--user", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--sequential", type=int, default=50)
    ap.add_argument("--concurrent", type=int, default=100)
    ap.add_argument("brokers", nargs="+")
    args = ap.parse_args()
    auth = "Basic " + base64.b64encode(f"{args.user}:{args.password}".encode()).decode()
    results = {}
    for spec in args.brokers:
        name, base = spec.split("=", 1)
        prefix = f"bench-vhosts-{uuid.uuid4().hex[:8]}"
        try:
            seq = sequential(base, auth, args.sequential, prefix)
            con = concurrent(base, auth, args.concurrent, prefix)
        finally:
            cleanup(base, auth, prefix)
        for row in (seq, con):
            print(json.dumps({"bench": "vhost_creation", "broker": name, **row}))
        results[name] = (seq, con)
    print("vhost creation per second (sequential | concurrent, median answer time of the concurrent ones):")
    for name, (seq, con) in results.items():
        print(f"  {name:<16} {seq['per_second']:>6.1f}/s | {con['per_second']:>6.1f}/s, answered after "
              f"{con['answer_s_median']:.1f} s (max {con['answer_s_max']:.1f} s, {con['answered_over_5s']} over 5 s)")
    names = list(results)
    if len(names) > 1:
        base = results[names[0]][1]["per_second"]
        print("  concurrent, against " + names[0] + ": " +
              ", ".join(f"{n} {results[n][1]['per_second'] / base:.1f}x" for n in names[1:]))


if __name__ == "__main__":
    main()
