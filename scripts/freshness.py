#!/usr/bin/env python3
"""Measures how late an acknowledged span becomes readable in a running ducktrace: sends one span
over OTLP/HTTP JSON, then polls /api/v3/traces/{id} until the span is there, --probes times.
Run it while `ducktrace-bench ingest` loads the server, to see the lag under load:

    ducktrace serve --data-dir "$(mktemp -d)" &
    ducktrace-bench ingest --duration 35 --warmup 1 &
    sleep 8; python3 scripts/freshness.py --otlp http://127.0.0.1:4318 --api http://127.0.0.1:16686

The lag includes one trace read (a few ms) and the 10 ms poll interval.
"""
import argparse, json, os, statistics, time, urllib.error, urllib.request


def probe(otlp, api):
    """Milliseconds from the answer to one new span until the trace API returns it."""
    trace_id, span_id, now = os.urandom(16).hex(), os.urandom(8).hex(), time.time_ns()
    span = {"traceId": trace_id, "spanId": span_id, "name": "freshness probe", "kind": 1,
            "startTimeUnixNano": str(now), "endTimeUnixNano": str(now + 1000)}
    resource = {"attributes": [{"key": "service.name", "value": {"stringValue": "freshness-probe"}}]}
    body = {"resourceSpans": [{"resource": resource, "scopeSpans": [{"spans": [span]}]}]}
    request = urllib.request.Request(otlp + "/v1/traces", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    urllib.request.urlopen(request).read()
    answered = time.perf_counter()
    while not readable(f"{api}/api/v3/traces/{trace_id}"):
        time.sleep(0.01)
    return (time.perf_counter() - answered) * 1000


def readable(url):
    """Whether the trace API has the probe yet: it answers 404 for a trace it does not know."""
    try:
        return b"freshness probe" in urllib.request.urlopen(url).read()
    except urllib.error.HTTPError as error:
        if error.code == 404:
            return False
        raise


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--otlp", default="http://127.0.0.1:4318")
    parser.add_argument("--api", default="http://127.0.0.1:16686")
    parser.add_argument("--probes", type=int, default=12)
    parser.add_argument("--interval", type=float, default=1.5, help="seconds between probes")
    args = parser.parse_args()
    lags = []
    for _ in range(args.probes):
        lags.append(probe(args.otlp, args.api))
        time.sleep(args.interval)
    lags.sort()
    print("readable after the answer: median %.0f ms, min %.0f, max %.0f (%d probes)"
          % (statistics.median(lags), lags[0], lags[-1], len(lags)))


if __name__ == "__main__":
    main()
