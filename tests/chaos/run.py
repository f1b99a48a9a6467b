"""`python -m tests.chaos.run --minutes 15`: every chaos scenario against the real gateway, one table.

Needs root (network namespaces, tc, tmpfs mounts), mosquitto, ffmpeg and docker-registry (`make
chaos` installs them). Exit status 0 only when every scenario's invariants held.
"""
from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

from tests.chaos.ledger import Row
from tests.chaos.scenarios import run_broker, run_cameras, run_disk_full, run_gateway_kills, run_serving
from tests.chaos.world import Budget, Packages, dump_failure

SCENARIOS = {
    "broker": run_broker,  # rows 1 and 6
    "cameras": run_cameras,
    "serving": run_serving,
    "kills": run_gateway_kills,
    "disk": run_disk_full,
}

COLUMNS = ("scenario", "faults injected", "results produced", "delivered", "dup", "gaps (gw)", "broker lost",
           "dropped (counted)", "max recovery / backoff cap", "RSS / fd / thread growth", "ok")


def table(rows: list[Row]) -> str:
    lines = [[r.scenario, f"{r.faults}: {r.fault_detail}" if r.fault_detail else str(r.faults), str(r.produced),
              str(r.delivered), str(r.duplicates), str(r.gaps), str(r.broker_lost), str(r.dropped),
              r.recovery_x, r.growth or "n/a", "yes" if r.ok else "NO"] for r in rows]
    out = ["| " + " | ".join(COLUMNS) + " |", "| " + " | ".join("---" for _ in COLUMNS) + " |"]
    out += ["| " + " | ".join(cells) + " |" for cells in lines]
    notes = [f"- {r.scenario}: {n}" for r in rows for n in r.notes]
    return "\n".join(out + ([""] + notes if notes else []))


def run_all(work: Path, budget: Budget, only: list[str] | None = None) -> list[Row]:
    packages = Packages(work)
    rows: list[Row] = []
    for name, fn in SCENARIOS.items():
        if only and name not in only:
            continue
        started = time.monotonic()
        sub = work / name
        logging.getLogger("chaos").info("=== scenario %s", name)
        try:
            result = fn(sub, budget, packages)
        except Exception as exc:  # one broken scenario must not hide the others
            row = Row(name)
            row.check("scenario ran to the end", False, f"{type(exc).__name__}: {exc}")
            row.notes.append(traceback.format_exc(limit=3).replace("\n", " | ")[-600:])
            result = row
        for r in result if isinstance(result, list) else [result]:
            r.notes.append(f"took {time.monotonic() - started:.0f}s")
            if not r.ok:
                dump_failure(r, sub)
            rows.append(r)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos.run", description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=15.0, help="scales the number of faults (15: full run)")
    parser.add_argument("--only", action="append", choices=sorted(SCENARIOS), help="run only these scenarios")
    parser.add_argument("--seed", type=int, default=int(time.time()) % 100000)
    parser.add_argument("--work", type=Path, default=None, help="work folder (default: a new temp folder)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    work = args.work or Path(tempfile.mkdtemp(prefix="edge-chaos-"))
    budget = Budget.for_minutes(args.minutes, seed=args.seed)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parents[2]).stdout.strip() or "unknown"
    started = time.monotonic()
    rows = run_all(work, budget, args.only)
    print(f"\nchaos run: {args.minutes:g}-minute budget, seed {args.seed}, commit {commit}, "
          f"{(time.monotonic() - started) / 60:.1f} min, work folder {work}\n")
    print(table(rows))
    return 0 if rows and all(r.ok for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
