"""`python -S bench/rss.py RESULT -- CMD...`: run CMD, write its wall time, CPU time and peak RSS to RESULT.

CPU time (user + system, all of the child's threads) is the figure a busy shared machine distorts
least: another process stretches a run's wall time, much less the CPU-seconds the run itself needs.

A child's `ru_maxrss` starts from the RSS of the process that forked it (Linux carries the parent's
high-water mark over `exec`), so the benchmark driver, which hosts the emulator, must not fork the
measured commands itself: this small launcher (~10 MB) does, and reports `wait4`'s figures.
"""

import json
import os
import subprocess
import sys
import time


def main() -> int:
    result, marker, *cmd = sys.argv[1:]
    if marker != "--" or not cmd:
        sys.stderr.write("usage: rss.py RESULT -- CMD...\n")
        return 2
    started = time.perf_counter()
    child = subprocess.Popen(cmd)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    child.returncode = code = os.waitstatus_to_exitcode(status)
    with open(result, "w") as out:
        json.dump({"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "maxrss_kb": usage.ru_maxrss,
                   "exit": code}, out)
    return code


if __name__ == "__main__":
    sys.exit(main())
