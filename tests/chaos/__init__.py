"""Chaos and soak suite: the real gateway under combined faults (broker, network, cameras, serving
backend, SIGKILL, full disk, model swaps), with the invariants checked on the seq record.

Nothing is mocked: real Mosquitto, ffmpeg, edge-gateway, edge-model-server and docker-registry
processes, a real network namespace, a real tmpfs, a real NOTIFY_SOCKET datagram socket.

- `broker`: Mosquitto in a network namespace (link cuts, tc drops) and the observer;
- `cameras`: video files and ffmpeg streams that faults cut or silence;
- `gateway`: edge-gateway with a NOTIFY_SOCKET, its config and status file;
- `ledger`: resource samples, the seq ledger and its accounting, the result `Row`;
- `world`: the budget, the model packages, and `World` (everything a scenario starts, torn down);
- `scenarios`: one function per scenario, `run_*(work, budget, packages) -> Row`;
- `run`: `python -m tests.chaos.run --minutes N` runs them all and prints one table.

`test_chaos_short.py` runs the same scenarios with a tiny budget inside `make test`.
Every fault loop is bounded in count and time; every process, namespace and mount is removed
by PID / name in `finally` blocks.

Seq accounting (`Ledger`): the gateway's own record is its spool. `sqlite_sequence` holds the
highest seq it ever assigned (AUTOINCREMENT: never reused, rolled-back appends consume nothing),
so every seq in 1..max was accepted. After the final clean stop, each of them must be either
recorded by the observer, still in the spool, or one of the `spool.dropped` (cap / disk full,
counted by the gateway). What is left is a gap. A gap whose neighbours were spooled in the
seconds before a SIGKILL of the broker is reported as a *broker* loss (Mosquitto acks a QoS 1
message before it has saved it; autosave_interval is 1 s), separately from *gateway* gaps.
"""
