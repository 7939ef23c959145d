#!/usr/bin/env python3
"""Reads the serial log of Lab/scenarios/guest-io.sh and prints what the guests measured:
per figure, the median over the runs of each VMM (with the spread), and lguest's ratio to QEMU
with vhost off and, for the network, with vhost on (and lguest's own vhost=on beside QEMU's).

The guest prints fio's terse lines (version 3) as they are; the fields used are, for a read job,
6 KiB, 7 bandwidth KiB/s, 8 IOPS and 18-37 completion-latency percentiles ("50.000000%=N", in
microseconds), and for a write job the same 41 fields later (47, 48, 49 and 59-78).

usage: guest-io-report.py SERIAL-LOG
"""
import re
import statistics
import sys

VMMS = {"lguest": "lguest", "lguest-vhost": "lguest vhost", "qemu-vhost-off": "QEMU", "qemu-vhost-on": "QEMU vhost"}
JOBS = ["randread-4k-qd1", "randread-4k-qd32", "randwrite-4k-qd1", "randwrite-4k-qd32",
        "read-1m-qd4", "write-1m-qd4"]


def fio_figures(job, terse):
    fields = terse.split(";")
    base = 41 if "write" in job.split("-")[0] else 0
    if len(fields) < base + 78:
        return None
    percentiles = {}
    for field in fields[base + 17:base + 37]:
        if "%=" in field:
            pct, value = field.split("%=")
            percentiles[float(pct)] = int(value)
    return {"iops": float(fields[base + 7]), "kibps": float(fields[base + 6]),
            "p50_us": percentiles.get(50.0), "p99_us": percentiles.get(99.0)}


def main(path):
    samples = {}  # (vmm, figure) -> [values]
    run = None
    with open(path, errors="replace") as log:
        for raw in log:
            line = raw.replace("\r", "").strip()
            begin = re.match(r"LAB-BEGIN io-(lguest(?:-poll\d+|-workers\d+|-vhost)?|qemu-vhost-(?:on|off))-\d+", line)
            if begin:
                run = begin.group(1)
                if run not in VMMS:
                    VMMS[run] = run.replace("-poll", " poll=").replace("-workers", " workers=")
                continue
            if line.startswith("LAB-END"):
                run = None
                continue
            if run is None or not line.startswith("LGUEST-IO "):
                continue
            words = line.split()
            if words[1] == "fio":
                job = words[2].removeprefix("job=")
                figures = fio_figures(job, words[3]) if len(words) > 3 else None
                if figures is None:
                    print(f"guest-io: {run} {job}: no result ({' '.join(words[3:])[:80]})", file=sys.stderr)
                    continue
                for name, value in figures.items():
                    if value is not None:
                        samples.setdefault((run, f"{job} {name}"), []).append(value)
            elif words[1] == "net":
                for word in words[2:]:
                    key, _, value = word.partition("=")
                    if key == "tcp":
                        figure = f"tcp-{value}"
                    elif key in ("mbps", "avg_ms", "min_ms"):
                        try:
                            number = float(value)
                        except ValueError:
                            continue
                        name = f"{figure} mbit/s" if key == "mbps" else f"ping {key}"
                        samples.setdefault((run, name), []).append(number)

    rows = [f"{job} {name}" for job in JOBS for name in ("iops", "kibps", "p50_us", "p99_us")]
    rows += ["tcp-g2h mbit/s", "tcp-h2g mbit/s", "ping avg_ms", "ping min_ms"]
    lower_is_better = ("_us", "_ms")
    printed = 0
    for row in rows:
        cells, medians = [], {}
        for vmm, label in VMMS.items():
            values = samples.get((vmm, row))
            if not values:
                continue
            medians[vmm] = statistics.median(values)
            cells.append(f"{label} {medians[vmm]:.6g} ({min(values):.6g}-{max(values):.6g}, n={len(values)})")
        if "lguest" not in medians:
            continue
        ratios = []
        pairs = [("lguest", "qemu-vhost-off"), ("lguest", "qemu-vhost-on"), ("lguest-vhost", "qemu-vhost-on")]
        for ours, peer in pairs:
            if ours in medians and peer in medians and medians[ours] > 0 and medians[peer] > 0:
                better = medians[peer] / medians[ours] if row.endswith(lower_is_better) else medians[ours] / medians[peer]
                ratios.append(f"{VMMS[ours]} vs {VMMS[peer]} {better:.2f}")
        print(f"guest-io {row:28} {'; '.join(cells)}; lguest's advantage {', '.join(ratios) or 'none'}")
        printed += 1
    if printed == 0:
        print("guest-io: no figures in the log", file=sys.stderr)
        return 1
    print("guest-io: advantage > 1 means lguest is better (more per second, or less time); medians of the runs")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1]))
