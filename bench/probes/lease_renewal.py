#!/usr/bin/env python3
"""What renewing a node's leases costs the machine, two ways, in one run.

A supervisor renews the lease of every runner it runs on each confirmed
heartbeat (every 2 s by default). This probe does the same file work for
1,000 runner directories, with the system calls the supervisor makes:
  rename   the old way: write `lease.tmp`, rename it over `lease`
  inplace  the way `runner_dir::write_lease` does it now: open `lease`
           and overwrite its fixed-width record at offset 0
and prints, for the last 40 s of 60 s of each (the steady state, the
kernel's writeback of earlier renewals included), the whole machine's busy
CPU and kernel CPU in cores, and the probe's own.

It is a profiling probe for docs/performance.md, not a `make bench`
scenario: the machine must be otherwise idle, as for the bench.

    python3 bench/probes/lease_renewal.py rename inplace rename inplace
"""
import os
import shutil
import sys
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../.local/tmp/lease-probe")
RUNNERS, PERIOD_S, RUN_S, WARM_S = 1000, 2.0, 60.0, 20.0


def machine():
    """Busy, total and kernel jiffies of all cores (kernel: system, iowait, irq, softirq)."""
    f = [int(x) for x in open("/proc/stat").readline().split()[1:9]]
    return sum(f) - f[3], sum(f), f[2] + f[4] + f[5] + f[6]


def renew(directory, record, mode):
    if mode == "rename":
        tmp = os.path.join(directory, "lease.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.write(fd, record)
        os.close(fd)
        os.rename(tmp, os.path.join(directory, "lease"))
    else:
        fd = os.open(os.path.join(directory, "lease"), os.O_WRONLY | os.O_CREAT, 0o644)
        os.pwrite(fd, record, 0)
        os.close(fd)


def run(mode):
    dirs = [os.path.join(ROOT, mode, str(i)) for i in range(RUNNERS)]
    for d in dirs:
        os.makedirs(d, exist_ok=True)
    start = time.monotonic()
    before = mine = warm_at = None
    k = 0
    while time.monotonic() - start < RUN_S:
        if before is None and time.monotonic() - start >= WARM_S:
            before, mine, warm_at = machine(), os.times(), time.monotonic()
        record = b"%020d %016x\n" % (k, k)
        for d in dirs:
            renew(d, record, mode)
        k += 1
        time.sleep(max(0.0, PERIOD_S - (time.monotonic() - start) % PERIOD_S))
    after, mine_after = machine(), os.times()
    elapsed = time.monotonic() - warm_at
    cores = os.cpu_count() / (after[1] - before[1])
    own = (mine_after.user - mine.user + mine_after.system - mine.system) / elapsed
    print(
        f"{mode:8s} machine busy {(after[0] - before[0]) * cores:.3f} cores, "
        f"kernel {(after[2] - before[2]) * cores:.3f} cores; the probe itself {own:.3f} cores",
        flush=True,
    )


def main(modes):
    if not modes or any(m not in ("rename", "inplace") for m in modes):
        sys.exit("usage: lease_renewal.py (rename|inplace)...")
    os.makedirs(ROOT, exist_ok=True)
    try:
        for mode in modes:
            run(mode)
    finally:
        shutil.rmtree(ROOT, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1:])
