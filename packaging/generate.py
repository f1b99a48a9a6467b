"""Man pages and shell completions generated from the programs' own parsers (run by setup.py at build).

The parsers are standard-library modules (edge/app/parser.py, provisioning/parser/,
edge/model_server/flags.py), loaded here without the package's dependencies; argparse-manpage and
shtab are build dependencies. edge-model-server has TF Serving's flag syntax, not argparse: its
page is written from its flag table.
"""
from __future__ import annotations

import argparse
import datetime as dt
import importlib
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def _load(relative: str, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / relative)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _date() -> str:
    epoch = os.environ.get("SOURCE_DATE_EPOCH")  # reproducible builds
    when = dt.datetime.fromtimestamp(int(epoch), dt.timezone.utc) if epoch else dt.datetime.now(dt.timezone.utc)
    return when.strftime("%Y-%m-%d")


def argparse_page(parser: argparse.ArgumentParser, description: str, version: str) -> str:
    from argparse_manpage.manpage import Manpage  # build dependency

    page = str(Manpage(parser, _data={"version": version, "project_name": "edge-gateway", "date": _date(),
                                      "description": description, "manual_title": "edge manual"}))
    # a text line starting with ' is a roff control line (help texts such as "'all', a glob..."): \& keeps it text
    return "\n".join("\\&" + line if line.startswith("'") else line for line in page.split("\n"))


def model_server_page(flags: ModuleType, version: str) -> str:
    """edge-model-server(1) from its flag table, in man(7) roff."""
    def esc(text: str) -> str:
        return text.replace("\\", "\\\\").replace("-", "\\-")

    lines = [f'.TH EDGE\\-MODEL\\-SERVER 1 "{_date()}" "edge-gateway {version}" "edge manual"',
             ".SH NAME", "edge\\-model\\-server \\- a drop-in for tensorflow_model_server (gRPC and REST)",
             ".SH SYNOPSIS", ".B edge\\-model\\-server", "\\-\\-model_base_path=PATH [\\-\\-model_name=NAME] "
             "[\\-\\-port=8500] [\\-\\-rest_api_port=0] ...", ".br", ".B edge\\-model\\-server",
             "\\-\\-model_config_file=FILE [...]", ".SH DESCRIPTION",
             "Serves TensorFlow Serving's PredictionService and ModelService over gRPC and its REST API, "
             "with TF Serving's flags, semantics, status codes and JSON.", ".SH OPTIONS"]
    defaults = flags.ServerFlags()
    for name in sorted(flags.HELP):
        lines += [".TP", f".B \\-\\-{esc(name)}={esc(str(getattr(defaults, name)).lower() if flags._kind(name) == 'bool' else str(getattr(defaults, name)))}",
                  esc(flags.HELP[name])]
    lines += [".SH COMPATIBILITY", "Accepted for compatibility and ignored: "
              + ", ".join(f"\\-\\-{esc(n)}" for n in sorted(flags.IGNORED)) + ".",
              ".SH SEE ALSO", "edge\\-gateway(1), edgectl(1)"]
    return "\n".join(lines) + "\n"


def write_man_pages_and_completions(data: Path, version: str) -> None:
    import shtab  # build dependency

    man, completion = data / "man", data / "completion"
    man.mkdir(parents=True, exist_ok=True)
    completion.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(ROOT))  # provisioning.parser is a package of standard-library modules
    programs = [("edge-gateway", _load("edge/app/parser.py", "_edge_app_parser"),
                 "the edge camera classification gateway daemon"),
                ("edgectl", importlib.import_module("provisioning.parser"), "provision and operate edge gateways")]
    for prog, module, description in programs:
        parser = module.build_parser()
        (man / f"{prog}.1").write_text(argparse_page(parser, description, version))
        (completion / f"{prog}.bash").write_text(shtab.complete(parser, shell="bash"))
        (completion / f"_{prog}").write_text(shtab.complete(parser, shell="zsh"))
    flags = _load("edge/model_server/flags.py", "_edge_model_server_flags")
    (man / "edge-model-server.1").write_text(model_server_page(flags, version))
