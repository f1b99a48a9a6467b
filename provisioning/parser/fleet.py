"""edgectl's fleet commands over MQTT (ls, status, watch, cmd, deploy, rollout, desired, export), operator
contexts and remote snapshots."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from provisioning.names import DEFAULT_BROKER, DEFAULT_STAGES
from provisioning.parser.common import command, group, percent


def add_context_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--context", help="a context of ~/.config/edgectl/config.toml (default: EDGE_CONTEXT, "
                   "else its current_context)")


def add_broker_options(p: argparse.ArgumentParser) -> None:
    """Broker flags; each unset one comes from EDGE_*, then the context (~/.config/edgectl/config.toml)."""
    add_context_option(p)
    p.add_argument("--broker", help=f"mqtt://host[:port] or mqtts://host[:port] (EDGE_BROKER; default "
                   f"{DEFAULT_BROKER})")
    p.add_argument("--prefix", help="topic prefix of the gateways (EDGE_PREFIX; default edge)")
    p.add_argument("--username", help="(EDGE_USERNAME)")
    p.add_argument("--password", help="(EDGE_PASSWORD)")
    p.add_argument("--ca-file", type=Path, help="CA of the broker's certificate (EDGE_CA_FILE)")
    p.add_argument("--cert", type=Path, help="client certificate, mqtts (EDGE_CERT)")
    p.add_argument("--key", type=Path, help="client key, mqtts (EDGE_KEY)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the broker / a reply")
    p.add_argument("--width", type=int, default=None, help=argparse.SUPPRESS)


def add_registry_options(p: argparse.ArgumentParser) -> None:
    """Registry flags; unset ones come from EDGE_REGISTRY_*, then the context (provisioning.profiles)."""
    p.add_argument("--registry-insecure", action="store_true", default=None,
                   help="plain HTTP to the registry, labs only (EDGE_REGISTRY_INSECURE)")
    p.add_argument("--registry-username", help="(EDGE_REGISTRY_USERNAME)")
    p.add_argument("--registry-password", help="(EDGE_REGISTRY_PASSWORD)")
    p.add_argument("--registry-ca-file", type=Path, help="(EDGE_REGISTRY_CA_FILE)")


def fleet_command(sub: Any, name: str, help_text: str, handler: str) -> argparse.ArgumentParser:
    p = command(sub, name, help_text, handler)
    add_broker_options(p)
    return p


def add_fleet(sub: Any) -> None:
    _, fsub = group(sub, "fleet", "the fleet over MQTT: ls, status, watch, cmd, rollout, desired, export, deploy",
                    "fleet_command")
    cli = "provisioning.fleet.cli"
    p = fleet_command(fsub, "ls", "one row per device from the retained status/health/model topics", f"{cli}:cmd_ls")
    p.add_argument("--json", action="store_true", help="rows as JSON")
    p = fleet_command(fsub, "status", "one device in detail", f"{cli}:cmd_status")
    p.add_argument("device")
    p.add_argument("--json", action="store_true")
    p = fleet_command(fsub, "watch", "live table of results", f"{cli}:cmd_watch")
    p.add_argument("--device", help="only these devices: 'all', a glob or a comma list")
    p.add_argument("--seconds", type=float, default=None, help="stop after this long (default: until Ctrl-C)")
    p.add_argument("--share", help="join shared subscription group GROUP (several watchers split the load)")
    p.add_argument("--json", action="store_true", help="no live table; the last result per camera as JSON at the end")
    p = fleet_command(fsub, "cmd", "send a command to a device and print the reply", f"{cli}:cmd_cmd")
    p.add_argument("device")
    p.add_argument("name", help="ping, config, snapshot, restart-camera, deploy, rollback, trust")
    p.add_argument("payload", nargs="?", help="JSON object (default {})")
    p.add_argument("--signed", type=Path, metavar="FILE",
                   help="send a document from `edgectl trust sign` as {\"signed\": ...} (config, rollback, trust)")
    p = fleet_command(fsub, "deploy", "staged rollout of a model version from this terminal, by command "
                      "(see `fleet rollout`)", "provisioning.fleet.rollout:cmd_deploy")
    p.add_argument("ref", help="registry/repository:tag of the version to roll out")
    p.add_argument("--devices", required=True, help="'all', a glob over device ids ('gate-*') or a comma list")
    p.add_argument("--canary", type=percent, default=10.0, help="share of devices in the first wave (default 10%%)")
    p.add_argument("--max-failures", type=percent, default=0.0,
                   help="halt and roll back when failures exceed this share of the devices (default 0%%)")
    p.add_argument("--wave-size", type=int, default=10, help="devices per wave after the canary (default 10)")
    add_registry_options(p)
    p.set_defaults(timeout=300.0)
    add_rollout(fsub)
    add_desired(fsub)
    add_export(fsub)


def add_rollout(fsub: Any) -> None:
    _, rsub = group(fsub, "rollout", "rollouts kept on the broker: start, status, pause, resume, abort, ls",
                    "rollout_command")
    cli = "provisioning.fleet.rollout_cli"

    def add(name: str, help_text: str, handler: str, with_id: bool = True) -> argparse.ArgumentParser:
        p = fleet_command(rsub, name, help_text, f"{cli}:{handler}")
        if with_id:
            p.add_argument("id", help="the rollout id")
        return p

    def driving(p: argparse.ArgumentParser) -> None:
        p.add_argument("--detach", action="store_true", help="write the document and return (resume drives it)")
        p.add_argument("--wait", type=float, default=None, metavar="S",
                       help="drive it at most S seconds, then exit 75 if it is still running (default: until done)")

    p = add("start", "write a rollout document and drive it", "cmd_start", with_id=False)
    p.add_argument("--id", help="rollout id (default r-<date>-<time>)")
    p.add_argument("--model", metavar="REF", help="registry/repository:tag[@digest]; the digest is resolved now")
    p.add_argument("--config", metavar="JSON", help="config values to set (merged into each device's fleet-managed "
                   "settings; never trust anchors)")
    p.add_argument("--devices", default="all", help="'all' (default), a glob over device ids or a comma list")
    p.add_argument("--stage", action="append", metavar="SPEC", help="[name=]N%% | [name=]N | [name=]dev,glob*; "
                   f"cumulative, repeat for each stage (default {' '.join(DEFAULT_STAGES).replace('%', '%%')})")
    p.add_argument("--max-failures", default="0%", help="abort above this many failures: N%% of the devices or N "
                   "(default 0%%)")
    p.add_argument("--device-timeout", type=float, default=3600.0, metavar="S",
                   help="an online device not converged S seconds after it took the document counts as failed")
    p.add_argument("--bake", type=float, default=0.0, metavar="S", help="wait S seconds after a stage settles")
    add_registry_options(p)
    driving(p)
    p = add("status", "where a rollout stands, per stage", "cmd_status")
    p.add_argument("--json", action="store_true")
    add("pause", "stop dispatching to new devices (nothing is undone)", "cmd_pause")
    driving(add("resume", "drive a paused, interrupted or aborting rollout on", "cmd_resume"))
    p = add("abort", "set the previous desired state back on every device the rollout reached", "cmd_abort")
    p.add_argument("--reason", help="recorded in the rollout document")
    driving(p)
    p = add("ls", "every rollout document on the broker", "cmd_ls", with_id=False)
    p.add_argument("--json", action="store_true")


def add_desired(fsub: Any) -> None:
    _, dsub = group(fsub, "desired", "one device's desired state: show, set", "desired_command")
    cli = "provisioning.fleet.desired_cli"
    p = fleet_command(dsub, "show", "the device's desired and reported documents", f"{cli}:cmd_show")
    p.add_argument("device")
    p = fleet_command(dsub, "set", "write a new desired generation for one device", f"{cli}:cmd_set")
    p.add_argument("device")
    p.add_argument("--model", metavar="REF", help="registry/repository:tag[@digest]; the digest is resolved now")
    p.add_argument("--config", metavar="JSON", help="the fleet-managed config values (replace the current ones)")
    p.add_argument("--force", action="store_true", help="even while the device is in an active rollout")
    add_registry_options(p)


def add_export(fsub: Any) -> None:
    p = fleet_command(fsub, "export", "results and events into PostgreSQL, exactly once per (device, seq)",
                      "provisioning.fleet.export:cmd_export")
    p.add_argument("--database", help="PostgreSQL conninfo or URL (EDGE_DATABASE)")
    p.add_argument("--group", default="edge-export", help="shared subscription group: consumers in one group share "
                   "the messages (default edge-export)")
    p.add_argument("--client-id", help="stable MQTT client id of this consumer (its persistent session); default "
                   "edge-export-<group>-<hostname>")
    p.add_argument("--session-expiry", type=int, default=86_400, metavar="S",
                   help="the broker keeps this consumer's share queued this long while it is away (default 1 day)")
    p.add_argument("--batch", type=int, default=500, help="messages per transaction at most (default 500)")
    p.add_argument("--batch-ms", type=float, default=100.0, help="commit at least this often (default 100 ms)")
    p.add_argument("--seconds", type=float, default=None, help="stop after this long (default: until SIGTERM)")


def add_context(sub: Any) -> None:
    _, csub = group(sub, "context", "operator contexts in ~/.config/edgectl/config.toml: ls, show, use",
                    "context_command")
    command(csub, "ls", "list the contexts (* = the one in use)", "provisioning.profiles:cmd_ls")
    show = command(csub, "show", "the settings a context gives (passwords hidden)", "provisioning.profiles:cmd_show")
    show.add_argument("name", nargs="?")
    use = command(csub, "use", "make NAME the current context", "provisioning.profiles:cmd_use")
    use.add_argument("name")


def add_snapshot(sub: Any) -> None:
    p = command(sub, "snapshot", "save a device camera's newest classified frame (labels drawn) as JPEG",
                "provisioning.fleet.snapshot:cmd_snapshot")
    p.add_argument("device")
    p.add_argument("camera")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="FILE.jpg", help="where to write (- for stdout)")
    add_broker_options(p)
