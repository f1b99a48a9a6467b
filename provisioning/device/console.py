"""`edgectl console hash-password`: the `password_hash` line for the gateway's `[console]` section.

Reads the password from the terminal (twice, not echoed) or, when stdin is not a terminal, from
the first line of stdin; prints one line for ``console.password_hash``. The console's user name is
not checked (HTTP Basic: any user name, this password).
"""
from __future__ import annotations

import argparse
import getpass
import logging
import sys

from edge.errors import UsageError
from edge.util.passwords import hash_password

logger = logging.getLogger(__name__)

MIN_PASSWORD_CHARS = 10


def read_password() -> str:
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("console password: ")
    if getpass.getpass("again: ") != first:
        raise UsageError("the two passwords differ; nothing printed")
    return first


def cmd_hash_password(args: argparse.Namespace) -> int:
    password = read_password()
    if len(password) < MIN_PASSWORD_CHARS:
        raise UsageError(f"the password must have at least {MIN_PASSWORD_CHARS} characters")
    print(hash_password(password))
    return 0
