#!/usr/bin/env python3
"""Writes tools/compare's Markdown report from the kvs-bench JSON files of its rounds.

tools/compare runs it with the settings in COMPARE_* environment variables. It reads
  raw/table/r<k>/<peer>--<workload>.json   one run of the table, round k
  raw/table/r<k>/machine                  core 1's pauses and the disk's fdatasync time, round k
  raw/stall/r<k>/<peer>.json, .err         one stall run (the .err has the per-second lines)
  raw/stall/r<k>/kvsd.segments             kvsd's segment files after its stall run
  raw/hostile.md                           tools/hostile-clients' table
and writes COMPARE_MD, plus raw/table/<peer>--<workload>.dat (the median round's latency
percentiles, for the plot). Figures are medians over the rounds; a ratio is the ratio of the
medians, with the range of the per-round ratios beside it.
"""

import json
import os
import platform
import re
import statistics
import subprocess

env = os.environ
raw = env["COMPARE_RAW"]
md_path = env["COMPARE_MD"]
png_path = env["COMPARE_PNG"]
peers = env["COMPARE_PEERS"].split(",")
workloads = [line.split("|", 1) for line in env["COMPARE_WORKLOADS"].splitlines() if line]
rounds = int(env["COMPARE_ROUNDS"])
stall_s = float(env["COMPARE_STALL_S"])
BASELINE = "redis-always"


def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()
    except OSError:
        return ""


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def table_run(round_no, peer, workload):
    return load(f"{raw}/table/r{round_no}/{peer}--{workload}.json")


# What each column reads from one run's JSON; None where the run did not give it.
def throughput(r):
    return r["throughput_ops_s"]


def latency(key):
    return lambda r: r["latency_us"][key] / 1000


def cpu_per_request(r):
    return r.get("server_cpu_us_per_request")


def busy_pct(r):
    cpu = (r.get("server") or {}).get("cpu")
    return cpu["busy_pct"] if cpu else None


def batch(key):
    def read(r):
        batches = (r.get("server") or {}).get("batches")
        return batches[key] if batches and batches["batches"] else None

    return read


def values(runs, metric):
    found = [metric(r) for r in runs if r is not None]
    return [v for v in found if v is not None]


def median(runs, metric):
    found = values(runs, metric)
    return statistics.median(found) if found else None


def ratio_text(a_runs, b_runs, metric):
    """Median of a ÷ median of b, and the range of the per-round ratios."""
    a, b = median(a_runs, metric), median(b_runs, metric)
    if a is None or not b:
        return "–"
    per_round = [
        metric(x) / metric(y)
        for x, y in zip(a_runs, b_runs)
        if x is not None and y is not None and metric(x) is not None and metric(y)
    ]
    text = f"**{a / b:.2f}×**"
    if len(per_round) > 1:
        text += f" ({min(per_round):.2f}–{max(per_round):.2f})"
    return text


def fmt(value, digits=2, suffix=""):
    return "–" if value is None else f"{value:,.{digits}f}{suffix}"


lines = []
out = lines.append
cpu_model = sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2").strip()
redis_version = sh("redis-server --version")
redis_version = redis_version.split(" ")[2].removeprefix("v=") if redis_version else "?"
etcd_version = sh("etcd --version")
etcd_version = etcd_version.splitlines()[0].split()[-1] if etcd_version else "?"
out(f"# kvsd, Redis and etcd: {os.path.basename(md_path)[:-3]}")
out("")
out("Written by `tools/compare` (see `docs/bench.md`):")
out("")
out("```")
out(env["COMPARE_COMMAND"])
out("```")
out("")
out("Each server alone on 127.0.0.1 pinned to core 0, in a fresh data dir each round; kvs-bench "
    "(one load thread) pinned to core 1. The peers take turns within each round (A B C, A B C, …), "
    "so a drift of the disk over minutes touches all alike; every figure is the **median of "
    f"{rounds} round(s)**, every ratio the ratio of the medians with the range of the per-round "
    "ratios in brackets.")
out("")
out(f"- machine: {cpu_model or platform.processor()}, {os.cpu_count()} cores, Linux "
    f"{platform.release()}, data dirs on {env['COMPARE_FS']}")
out(f"- kvsd: {env['COMPARE_REV']} (`--fsync always`); Redis {redis_version} "
    "(`--appendonly yes --appendfsync always` or `everysec`, `--save ''`); "
    f"etcd {etcd_version} (single node, its WAL fsynced on every commit)")
out(f"- each run: {env['COMPARE_WARMUP']} s warmup, then {env['COMPARE_DURATION']} s measured; "
    f"{env['COMPARE_KEYSPACE']} keys, {env['COMPARE_DATA_SIZE']}-byte values, uniform keys, seed 1; "
    "`50x16` = 50 connections with 16 requests in flight each")
out("- **server CPU µs/req**: utime + stime of the server process (`/proc/PID/stat`, all its "
    "threads) from the start of the measured window to its last reply, ÷ the replies in that "
    "window; **core busy**: that CPU time ÷ the window")
out("- the machine before each round: a spin loop on the idle core 1 counts the pauses over "
    "0.5 ms (CPU taken away by the VM or other load: they set a floor under every p99 here), and "
    "100 fdatasyncs of 4 KiB on the data dirs' disk (other work on the machine moves it):")
for mode in ("table", "stall"):
    for k in range(1, rounds + 1):
        try:
            with open(f"{raw}/{mode}/r{k}/machine") as f:
                out(f"  - {mode} round {k}: {f.read().strip()}")
        except OSError:
            pass
out("")

failed = []
errors = []


def note_problems(label, run):
    if run is None:
        failed.append(label)
    elif run["errors"]:
        errors.append((label, run["errors"]))


if any(os.path.isdir(f"{raw}/table/r{k}") for k in range(1, rounds + 1)):
    runs = {
        (p, w): [table_run(k, p, w) for k in range(1, rounds + 1)]
        for p in peers
        for w, _ in workloads
    }
    for (p, w), rs in runs.items():
        for k, r in enumerate(rs, 1):
            note_problems(f"{p} {w} round {k}", r)

    out(f"## Medians of {rounds} round(s)")
    out("")
    out("| workload | peer | ops/s | p50 ms | p99 ms | p99.9 ms | server CPU µs/req | core busy |")
    out("|---|---|---:|---:|---:|---:|---:|---:|")
    for w, _ in workloads:
        for p in peers:
            rs = runs[(p, w)]
            out(f"| {w} | {p} | {fmt(median(rs, throughput), 0)} | {fmt(median(rs, latency('p50')))} "
                f"| {fmt(median(rs, latency('p99')))} | {fmt(median(rs, latency('p999')))} "
                f"| {fmt(median(rs, cpu_per_request), 1)} | {fmt(median(rs, busy_pct), 0, '%')} |")
    out("")

    if "kvsd" in peers:
        others = [p for p in peers if p != "kvsd"]
        if BASELINE in others:
            out(f"## kvsd ÷ {BASELINE}")
            out("")
            out("Throughput: higher is better for kvsd; latency and CPU per request: lower is better.")
            out("")
            out("| workload | throughput | p50 | p99 | p99.9 | server CPU µs/req |")
            out("|---|---:|---:|---:|---:|---:|")
            for w, _ in workloads:
                a, b = runs[("kvsd", w)], runs[(BASELINE, w)]
                out(f"| {w} | {ratio_text(a, b, throughput)} | {ratio_text(a, b, latency('p50'))} "
                    f"| {ratio_text(a, b, latency('p99'))} | {ratio_text(a, b, latency('p999'))} "
                    f"| {ratio_text(a, b, cpu_per_request)} |")
            out("")
            # Medians hide which rounds were quiet: each round's ratios, beside what the
            # machine was doing just before it.
            out(f"Per round, kvsd ÷ {BASELINE}: throughput / server CPU per request "
                "(and core 1's pauses before the round):")
            out("")
            out("| round | " + " | ".join(w for w, _ in workloads) + " |")
            out("|---" * (1 + len(workloads)) + "|")
            for k in range(rounds):
                try:
                    with open(f"{raw}/table/r{k + 1}/machine") as f:
                        machine = f.read().split(",")[0].replace(" over 0.5 ms", "")
                except OSError:
                    machine = "?"
                cells = []
                for w, _ in workloads:
                    a, b = runs[("kvsd", w)][k], runs[(BASELINE, w)][k]
                    if a is None or b is None:
                        cells.append("–")
                        continue
                    cpu_a, cpu_b = cpu_per_request(a), cpu_per_request(b)
                    cpu = f"{cpu_a / cpu_b:.2f}×" if cpu_a is not None and cpu_b else "–"
                    cells.append(f"{throughput(a) / throughput(b):.2f}× / {cpu}")
                out(f"| {k + 1} ({machine}) | " + " | ".join(cells) + " |")
            out("")
        rest = [p for p in others if p != BASELINE]
        if rest:
            out("## kvsd ÷ the other peers")
            out("")
            out("| workload | peer | throughput | p99 | server CPU µs/req |")
            out("|---|---|---:|---:|---:|")
            for w, _ in workloads:
                for p in rest:
                    a, b = runs[("kvsd", w)], runs[(p, w)]
                    out(f"| {w} | {p} | {ratio_text(a, b, throughput)} "
                        f"| {ratio_text(a, b, latency('p99'))} | {ratio_text(a, b, cpu_per_request)} |")
            out("")

        batch_rows = [(w, runs[("kvsd", w)]) for w, _ in workloads
                      if median(runs[("kvsd", w)], batch("records_per_batch")) is not None]
        if batch_rows:
            out("## kvsd's fsync batches")
            out("")
            out("From kvsd's STATS at the start and end of the measured window: log records written ÷ "
                "fsync batches (`batches_total`; records from `batch_records_total`, or `last_seq` where "
                "STATS has no such line), and that ÷ the connections sending SETs: *fsync batches hold "
                "N% of the connected writers* (over 100% when each connection has several in flight).")
            out("")
            out("| workload | records per batch | writers | batches hold (median) | per round |")
            out("|---|---:|---:|---:|---|")
            for w, rs in batch_rows:
                fills = [fmt(v, 0, "%") for v in values(rs, batch("fill_pct"))]
                writers = values(rs, batch("writers"))
                out(f"| {w} | {fmt(median(rs, batch('records_per_batch')), 1)} "
                    f"| {writers[0] if writers else '–'} | **{fmt(median(rs, batch('fill_pct')), 0, '%')}** "
                    f"| {', '.join(fills)} |")
            out("")

    # Plot data: the median round (by throughput) of each peer and workload.
    for (p, w), rs in runs.items():
        present = [(k, r) for k, r in enumerate(rs, 1) if r is not None]
        if not present:
            continue
        present.sort(key=lambda kr: throughput(kr[1]))
        k = present[(len(present) - 1) // 2][0]
        points = []
        try:
            with open(f"{raw}/table/r{k}/{p}--{w}.hgrm") as f:
                for line in f:
                    parts = line.split()
                    if len(parts) == 4 and not line.startswith("#"):
                        try:
                            points.append((float(parts[3]), float(parts[0])))
                        except ValueError:
                            pass
        except OSError:
            pass
        with open(f"{raw}/table/{p}--{w}.dat", "w") as f:
            for x, y in points:
                if x <= 1e6:
                    f.write(f"{x} {y}\n")

if stall_s:
    PROGRESS = re.compile(r"^\[\s*\d+ s\] run\s.*p99\s+([\d.]+) ms")

    def worst_second_p99(path):
        worst = None
        try:
            with open(path) as f:
                for line in f:
                    m = PROGRESS.match(line)
                    if m:
                        worst = max(worst or 0.0, float(m.group(1)))
        except OSError:
            pass
        return worst

    stall = {p: [] for p in ("kvsd", BASELINE)}
    worst = {p: [] for p in stall}
    segments = []
    for k in range(1, rounds + 1):
        for p in stall:
            r = load(f"{raw}/stall/r{k}/{p}.json")
            note_problems(f"{p} stall run round {k}", r)
            stall[p].append(r)
            worst[p].append(worst_second_p99(f"{raw}/stall/r{k}/{p}.err"))
        try:
            with open(f"{raw}/stall/r{k}/kvsd.segments") as f:
                files = [line.split() for line in f if line.strip()]
            ids = [int(name[:10]) for name, _ in files]
            segments.append((max(ids), len(files)))
        except (OSError, ValueError):
            segments.append(None)
    if any(r is not None for rs in stall.values() for r in rs):
        stall_bytes = env.get("COMPARE_STALL_DATA_SIZE", env["COMPARE_DATA_SIZE"])
        out(f"## Stall run: durable SET 50x1 for {stall_s:g} s, {stall_bytes}-byte values")
        out("")
        out("kvsd and Redis-always in turn, each round a fresh server; a long run, so kvsd's log "
            "goes through several 64 MiB segments (the next one is prepared while the active one "
            "fills). *Worst second's p99*: the highest p99 of kvs-bench's one-second progress lines.")
        out("")
        out("| peer | ops/s | p99 ms | p99.9 ms | max ms | worst second's p99 ms | server CPU µs/req |")
        out("|---|---:|---:|---:|---:|---:|---:|")
        for p, rs in stall.items():
            w = [v for v in worst[p] if v is not None]
            out(f"| {p} | {fmt(median(rs, throughput), 0)} | {fmt(median(rs, latency('p99')))} "
                f"| {fmt(median(rs, latency('p999')))} | {fmt(median(rs, latency('max')))} "
                f"| {fmt(statistics.median(w) if w else None)} | {fmt(median(rs, cpu_per_request), 1)} |")
        a, b = stall["kvsd"], stall[BASELINE]
        out(f"| **kvsd ÷ {BASELINE}** | {ratio_text(a, b, throughput)} | {ratio_text(a, b, latency('p99'))} "
            f"| {ratio_text(a, b, latency('p999'))} | {ratio_text(a, b, latency('max'))} | | "
            f"{ratio_text(a, b, cpu_per_request)} |")
        out("")
        for k, seg in enumerate(segments, 1):
            if seg is None:
                out(f"- round {k}: kvsd's segment files were not listed")
            else:
                last, count = seg
                out(f"- round {k}: kvsd's log went through {last} segments of 64 MiB "
                    f"(segment ids 1 to {last}; {count} segment files left at the end)")
        for k in range(rounds):
            row = []
            for p, rs in stall.items():
                r = rs[k]
                if r is not None:
                    row.append(f"{p} p99 {latency('p99')(r):.2f} / p99.9 {latency('p999')(r):.2f} / "
                               f"max {latency('max')(r):.2f} ms")
            if row:
                out(f"- round {k + 1}: " + "; ".join(row))
        out("")

hostile_md = f"{raw}/hostile.md"
if os.path.exists(hostile_md):
    with open(hostile_md) as f:
        body = f.read().splitlines()
    out("## 1,000 stalled connections (tools/hostile-clients)")
    out("")
    # (the temp file it was written to says nothing to a reader)
    lines.extend(re.sub(r" --out \S+`", "`", line) for line in body if not line.startswith("# "))
    out("")

if errors or failed:
    out("## Errors")
    out("")
    for label, count in errors:
        out(f"- {label}: {count} errors")
    for label in failed:
        out(f"- {label}: kvs-bench did not finish")
    out("")
else:
    out("Every run: no errors (each request sent got its reply).")
    out("")
if os.path.isdir(f"{raw}/table"):
    out(f"![latency percentiles]({os.path.basename(png_path)})")
    out("")
    out("Workloads (kvs-bench options besides those above):")
    out("")
    for w, options in workloads:
        out(f"- `{w}`: `{options}`")
    out("")

with open(md_path, "w") as f:
    f.write("\n".join(lines).rstrip("\n") + "\n")
