"""`make bench` (`python -m bench`): the streaming service's performance budget, as ratios.

Every figure is measured against a baseline measured in the same run (medians over
repetitions, min-max beside them), so a noisy two-core machine moves both sides alike; absolute
numbers are context. The upstream is the fake OpenAI-compatible server over real HTTP, in its
own process, so the real `ChatOpenAI` path is measured and its CPU is never counted as ours.

    python -m bench                      # every case, a few minutes
    python -m bench --quick              # the short form: fewer streams and repetitions
    python -m bench --only cost,cancel   # some cases

Cases (bench/cases/): cost, throughput, scale, first_token, cancel, slow_clients, memory,
limits, workers (several workers on PostgreSQL + Redis), langgraph_api (the LangGraph API
against the native API and `langgraph dev`). The table is
printed at the end and written to bench/results/latest.json.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback

from bench.cases import CASES
from bench.cases._common import Context
from bench.harness import Upstream
from bench.report import Figure, table, write


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--only", default="", help="comma-separated cases: " + ", ".join(CASES))
    parser.add_argument("--quick", action="store_true", help="the short form")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(CASES)
    unknown = [n for n in names if n not in CASES]
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)}; known: {', '.join(CASES)}")

    figures: list[Figure] = []
    failed: list[str] = []
    with Upstream().start("/stats") as upstream:
        ctx = Context(upstream=upstream, quick=args.quick)
        for name in names:
            started = time.monotonic()
            print(f"-- {name} ...", file=sys.stderr, flush=True)
            try:
                got = CASES[name](ctx)
            except Exception:
                traceback.print_exc()
                failed.append(name)
                continue
            figures.extend(got)
            print(f"-- {name}: {time.monotonic() - started:.0f}s", file=sys.stderr, flush=True)
            print(table(got), file=sys.stderr, flush=True)
    write(figures, {"only": names, "quick": args.quick, "failed": failed})
    print(table(figures))
    if failed:
        print(f"\ncases that failed to run: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
