"""Chaos and soak suite: the real gateway under combined faults (broker, network, cameras, serving
backend, SIGKILL, full disk, model swaps), with the invariants checked on the seq record.

- `harness`: the parts (broker in a network namespace, observer, cameras, gateway with a real
  NOTIFY_SOCKET, tmpfs, seq ledger, resource samples, the result table).
- `scenarios`: one function per scenario, `run_*(work, budget) -> Row`.
- `run`: `python -m tests.chaos.run --minutes N` runs them all and prints one table.

`tests/test_chaos_short.py` runs the same scenarios with a tiny budget inside `make test`.
Every fault loop is bounded in count and time; every process, namespace and mount is removed
by PID / name in `finally` blocks.
"""
