"""Rate limiter benchmark: accuracy under 1, 2 and 4 worker processes, and cost per acquire.

    .venv/bin/python bench/ratelimit.py [--redis-url URL] [--seconds 20] [--workers 1,2,4]

For each number of workers, every worker keeps one pending task in each of two sub-queues
(paid 3 : free 1) of one queue limited to --rate messages/s with --burst, and retries on the
countdown the limiter gives. Printed per row:

  ratio        achieved / configured rate, after the initial burst (target 0.97 to 1.00)
  worst 1s     most grants in any 1 s window, and how far above the rate (limit: burst)
  share err    largest |share / weight share - 1| over the sub-queues
  calls/grant  try_acquire calls per grant (countdowns keep waiters from polling in a herd)
  INCR us      a bare Redis INCR round trip, measured in the same run by as many processes
  acquire us   try_acquire (grant path: messages/s + requests/min + tokens + 2 sub-queues)
  x INCR       acquire / INCR (target <= 2)
  deny us      try_acquire when denied (waiter registered, countdown computed)

and the fair anchor for the cost (issue 16): the SAME Lua script with the SAME keys and
arguments sent through redis-py's `Script` (EVALSHA), for the grant and the deny path:
  py grant us / py deny us, and ours / redis-py (target <= 1.0: our acquire adds nothing).
"""

from __future__ import annotations

import argparse
import os
import platform
import uuid

from agentflow.ratelimit import QueueLimits
from agentflow.ratelimit.loadtest import (Scenario, achieved_rate, measure_costs, run_redis, share_error,
                                          steady, worst_window)

WEIGHTS = {"paid": 3.0, "free": 1.0}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    ap.add_argument("--seconds", type=float, default=20.0, help="load window per row")
    ap.add_argument("--workers", default="1,2,4")
    ap.add_argument("--rate", type=float, default=20.0, help="max_messages_per_second")
    ap.add_argument("--burst", type=int, default=5)
    ap.add_argument("--warmup", type=float, default=2.0, help="seconds left out of the rate")
    args = ap.parse_args(argv)

    tag = uuid.uuid4().hex[:8]
    prefix = f"af:rl:bench:{tag}"
    subs = tuple(WEIGHTS.items())
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"queue: {args.rate:g} msg/s, burst {args.burst}, sub-queues paid 3 : free 1; "
          f"{args.seconds:g} s per row; Redis {args.redis_url}")
    head = (f"{'workers':>7} {'grants':>6} {'ratio':>6} {'worst 1s':>9} {'share err':>9} "
            f"{'calls/grant':>11} {'INCR us':>8} {'acquire us':>10} {'x INCR':>6} {'deny us':>8} {'x INCR':>6} "
            f"{'py grant us':>11} {'x py':>5} {'py deny us':>10} {'x py':>5}")
    print(head)
    print("-" * len(head))
    rows = []
    for n in [int(x) for x in args.workers.split(",")]:
        q = QueueLimits(f"bench-{tag}-{n}", max_messages_per_second=args.rate, burst_size=args.burst,
                        sub_queues=subs)
        [res] = run_redis(args.redis_url, prefix, [Scenario(q, workers=n, subs=("paid", "free"))],
                          args.seconds)
        ratio = achieved_rate(steady(res.times, args.warmup)) / args.rate
        worst = worst_window(res.times, 1.0)
        err = share_error(res.grants, WEIGHTS, t_from=res.times[0] + args.warmup)
        grant_q = QueueLimits(f"cost-{tag}-{n}", max_messages_per_second=1e6, burst_size=1000,
                              max_requests_per_minute=1e9, max_tokens_per_minute=10**12, sub_queues=subs)
        deny_q = QueueLimits(f"deny-{tag}-{n}", max_messages_per_second=1e-3, sub_queues=subs)
        cost = measure_costs(args.redis_url, prefix, [grant_q, deny_q], processes=n)
        incr, acq, deny = cost["incr"] * 1e6, cost[grant_q.id] * 1e6, cost[deny_q.id] * 1e6
        py_acq, py_deny = cost["py:" + grant_q.id] * 1e6, cost["py:" + deny_q.id] * 1e6
        print(f"{n:>7} {len(res.grants):>6} {ratio:>6.3f} {worst:>4} (+{worst - args.rate:>2.0f}) "
              f"{err * 100:>8.2f}% {res.calls / len(res.grants):>11.2f} {incr:>8.1f} {acq:>10.1f} "
              f"{acq / incr:>6.2f} {deny:>8.1f} {deny / incr:>6.2f} {py_acq:>11.1f} {acq / py_acq:>5.2f} "
              f"{py_deny:>10.1f} {deny / py_deny:>5.2f}", flush=True)
        rows.append({"workers": n, "grants": len(res.grants), "ratio": ratio, "worst_1s": worst,
                     "over_rate": worst - args.rate, "share_err_pct": err * 100,
                     "calls_per_grant": res.calls / len(res.grants), "incr_us": incr, "acquire_us": acq,
                     "acquire_x_incr": acq / incr, "deny_us": deny, "deny_x_incr": deny / incr,
                     "py_acquire_us": py_acq, "acquire_x_py": acq / py_acq, "py_deny_us": py_deny,
                     "deny_x_py": deny / py_deny, "rate": args.rate, "burst": args.burst,
                     "seconds": args.seconds})
    from agentflow.ratelimit.redis import RedisLimiter
    RedisLimiter(args.redis_url, key_prefix=prefix).clear()
    return {"rows": rows}


if __name__ == "__main__":
    main()
