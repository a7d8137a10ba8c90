"""Issue 15's load target as a ratio in one run: ``bench/load.py`` on an older revision and on
this checkout, alternated on the same machine, so what the machine does meanwhile falls on both.

    .venv/bin/python bench/load_ratio.py                 # against a5047db, 3 rounds of 60 s
    .venv/bin/python bench/load_ratio.py --before REV --rounds 5 --duration 60

The older revision is checked out into a temporary git worktree (removed after) and runs its own
``bench/load.py`` with this checkout's virtualenv. Each round runs the older one, then this one;
the answer is the median requests/s and p95 of each and their ratio. Exits non-zero if a run
fails (a 5xx, a lock error, a lost write) or cannot be read. Run nothing else meanwhile: it is
a CPU-bound measurement on a 2-core machine.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: The SkyDeck the issue measured ("today's"): the last commit before its first change.
BEFORE = "a5047db"
ALL_LINE = re.compile(r"^  all +[\d,]+ req +(?P<rate>[\d.]+)/s .* p95 +(?P<p95>[\d.]+) ms", re.M)


def run_load(tree: Path, duration: float, *, reference: bool) -> tuple[float, float, str]:
    """requests/s, p95 (ms) and the failed checks ("" if none) of one ``bench/load.py`` run.

    A run of this checkout that fails its checks stops the measurement. The reference run's
    failures are its own (the old revision timed a request out under load): they are printed
    with its figures, which still count.
    """
    done = subprocess.run(
        [sys.executable, "bench/load.py", "--duration", str(duration)],
        cwd=tree,
        env={**_environ(), "PYTHONPATH": str(tree)},
        capture_output=True,
        text=True,
        timeout=duration + 600,
    )
    found = ALL_LINE.search(done.stdout)
    if found is None or (done.returncode != 0 and not reference):
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-15:])
        raise SystemExit(f"load_ratio: the run in {tree} failed ({done.returncode}):\n{tail}")
    failures = [line for line in done.stdout.splitlines() if line.startswith("FAIL")]
    failed = "; ".join(failures) or (f"exit {done.returncode}" if done.returncode else "")
    return float(found["rate"]), float(found["p95"]), failed


def _environ() -> dict[str, str]:
    """This environment without what would point the run at another tree or database."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DATABASE_URL")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", default=BEFORE, help="the older revision (default a5047db)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=60, help="seconds of load per run")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    worktree = Path(tempfile.mkdtemp(prefix="skydeck-before-")) / "tree"
    subprocess.run(
        ["git", "worktree", "add", "--detach", "-q", str(worktree), args.before],
        cwd=ROOT,
        check=True,
    )
    runs: dict[str, list[tuple[float, float]]] = {"before": [], "now": []}
    try:
        for round_ in range(1, args.rounds + 1):
            for label, tree in (("before", worktree), ("now", ROOT)):
                rate, p95, failed = run_load(tree, args.duration, reference=label == "before")
                runs[label].append((rate, p95))
                note = f"  (its own checks failed: {failed})" if failed else ""
                print(
                    f"round {round_} {label:6} {rate:6.1f} requests/s  p95 {p95:7.1f} ms{note}",
                    flush=True,
                )
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(worktree)], cwd=ROOT)
    rate = {k: statistics.median(r for r, _ in v) for k, v in runs.items()}
    p95 = {k: statistics.median(p for _, p in v) for k, v in runs.items()}
    print(
        f"median: before {rate['before']:.1f} requests/s (p95 {p95['before']:.0f} ms), "
        f"now {rate['now']:.1f} requests/s (p95 {p95['now']:.0f} ms): "
        f"{rate['now'] / rate['before']:.2f}x the requests/s of {args.before}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
