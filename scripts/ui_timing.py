#!/usr/bin/env python3
"""Loads generated traces into a running ducktrace over OTLP/HTTP JSON and times the trace and
search pages (server time as seen by the client on loopback).

    python3 scripts/ui_timing.py --otlp http://127.0.0.1:4318 --ui http://127.0.0.1:16686 \
        --traces 20000 --spans-per-trace 10

It stores one 5,000-span trace, one 100-span trace and --traces traces of --spans-per-trace
spans spread over the last hour, then prints the median and p99 of 20 requests per page.
"""
import argparse, json, random, statistics, time, urllib.request

SERVICES = ["frontend", "checkout", "payments", "inventory", "users", "search", "mailer", "db"]


def hexid(bits):
    return "%0*x" % (bits // 4, random.getrandbits(bits) or 1)


def trace_spans(n, start_ns, trace_id=None):
    """n spans of one trace as (service, span) pairs: a random tree, children inside parents."""
    trace_id = trace_id or hexid(128)
    spans = []
    root = {"traceId": trace_id, "spanId": hexid(64), "name": "GET /api/%d" % random.randint(1, 20),
            "kind": 2, "startTimeUnixNano": str(start_ns),
            "endTimeUnixNano": str(start_ns + random.randint(5_000_000, 2_000_000_000))}
    spans.append(("frontend", root))
    for i in range(1, n):
        parent = spans[random.randrange(max(1, len(spans) - 50), len(spans))][1] if i > 1 else root
        p_start, p_end = int(parent["startTimeUnixNano"]), int(parent["endTimeUnixNano"])
        s = random.randint(p_start, max(p_start, p_end - 1000))
        e = random.randint(s + 1000, max(s + 1000, p_end))
        span = {"traceId": trace_id, "spanId": hexid(64), "parentSpanId": parent["spanId"],
                "name": random.choice(["SELECT", "GET", "POST /charge", "cache.get", "render", "publish"]),
                "kind": random.choice([1, 3, 2]), "startTimeUnixNano": str(s), "endTimeUnixNano": str(e),
                "attributes": [{"key": "http.status_code", "value": {"intValue": str(random.choice([200, 200, 200, 404, 500]))}},
                               {"key": "peer", "value": {"stringValue": "10.0.0.%d" % random.randint(1, 254)}}]}
        if random.random() < 0.02:
            span["status"] = {"code": 2, "message": "boom"}
        spans.append((random.choice(SERVICES), span))
    return trace_id, spans


def post(otlp, spans):
    by_service = {}
    for service, span in spans:
        by_service.setdefault(service, []).append(span)
    body = {"resourceSpans": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": s}}]},
                               "scopeSpans": [{"scope": {"name": "ui_timing"}, "spans": sp}]}
                              for s, sp in by_service.items()]}
    request = urllib.request.Request(otlp + "/v1/traces", json.dumps(body).encode(),
                                     {"content-type": "application/json"})
    urllib.request.urlopen(request).read()


def timed(url, n=20):
    times = []
    for _ in range(n):
        t = time.perf_counter()
        with urllib.request.urlopen(url) as response:
            response.read()
            assert response.status == 200, url
        times.append((time.perf_counter() - t) * 1000)
    times.sort()
    return statistics.median(times), times[min(n - 1, int(n * 0.99))]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--otlp", default="http://127.0.0.1:4318")
    parser.add_argument("--ui", default="http://127.0.0.1:16686")
    parser.add_argument("--traces", type=int, default=20000)
    parser.add_argument("--spans-per-trace", type=int, default=10)
    parser.add_argument("--skip-load", action="store_true")
    args = parser.parse_args()
    now = time.time_ns()
    big, small = "5" * 32, "1" * 31 + "2"
    if not args.skip_load:
        post(args.otlp, trace_spans(5000, now - 60_000_000_000, big)[1])
        post(args.otlp, trace_spans(100, now - 50_000_000_000, small)[1])
        batch = []
        for i in range(args.traces):
            batch += trace_spans(args.spans_per_trace, now - random.randint(0, 3_500_000_000_000))[1]
            if len(batch) >= 5000:
                post(args.otlp, batch)
                batch = []
        if batch:
            post(args.otlp, batch)
        time.sleep(5)  # the trace summarizer runs every 2 s
    pages = {
        "trace, 5000 spans": f"/trace/{big}",
        "trace, 100 spans": f"/trace/{small}",
        "search, last hour, 20 most recent": "/search?lookback=1h",
        "search, longest 100": "/search?lookback=1h&sort=longest&limit=100",
        "search, service=payments errors": "/search?lookback=1h&service=payments&status=error",
        "search, attribute http.status_code=500": "/search?lookback=1h&attributes=http.status_code%3D500",
        "search, operation + min duration": "/search?lookback=1h&service=db&operation=SELECT&min_duration=500ms",
    }
    for name, path in pages.items():
        median, p99 = timed(args.ui + path)
        print(f"{name:45s} median {median:7.1f} ms   p99 {p99:7.1f} ms")


if __name__ == "__main__":
    main()
