"""The console's authentication: token (Bearer or Basic password), scrypt password with a remembered
header and a doubling back-off after wrong passwords."""
from __future__ import annotations

import base64
import threading

import pytest

from edge.device.console import auth as auth_module
from edge.device.console.auth import Authenticator
from edge.util.passwords import hash_password

TOKEN = "0123456789abcdef-token"


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_no_credentials_configured_lets_everything_through() -> None:
    assert Authenticator().check(None).ok and Authenticator().kind == "none"


def test_token_as_bearer_or_as_basic_password() -> None:
    auth = Authenticator(token=TOKEN)
    assert auth.check(f"Bearer {TOKEN}").ok
    assert auth.check(basic("anyone", TOKEN)).ok
    for header in (None, "", "Bearer", f"Bearer {TOKEN}x", basic("x", "wrong"), "Basic %%%", f"Token {TOKEN}"):
        verdict = auth.check(header)
        assert not verdict.ok and verdict.status == 401 and verdict.reason, header
        assert verdict.challenge.startswith("Basic realm=")
    assert auth.refused == 7


def test_password_checked_once_then_remembered(monkeypatch: pytest.MonkeyPatch) -> None:
    auth = Authenticator(password_hash=hash_password("pw-1", n=2**10))
    calls = []
    original = auth_module.verify_password
    monkeypatch.setattr(auth_module, "verify_password", lambda p, h: calls.append(p) or original(p, h))
    assert auth.check(basic("admin", "pw-1")).ok
    assert auth.check(basic("admin", "pw-1")).ok and auth.check(basic("admin", "pw-1")).ok
    assert calls == ["pw-1"]  # scrypt ran once
    assert not auth.check("Bearer pw-1").ok  # a password console takes Basic only


def test_wrong_passwords_back_off_doubling_but_a_remembered_login_still_works(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr(auth_module.time, "monotonic", lambda: clock[0])
    auth = Authenticator(password_hash=hash_password("right", n=2**10))
    assert auth.check(basic("a", "right")).ok
    first = auth.check(basic("a", "wrong-1"))
    assert first.status == 401 and first.reason == "wrong password"
    blocked = auth.check(basic("a", "wrong-2"))
    assert blocked.status == 429 and blocked.retry_after_s >= 1
    assert auth.check(basic("a", "right")).ok  # remembered: not checked again
    clock[0] += 1.1
    assert auth.check(basic("a", "wrong-3")).status == 401  # second failure: 2 s
    clock[0] += 1.1
    assert auth.check(basic("a", "wrong-4")).status == 429
    clock[0] += 1.0
    assert auth.check(basic("b", "right")).ok  # a new header with the right password, after the back-off
    clock[0] += auth_module.REMEMBER_S + 1
    assert auth.check(basic("a", "right")).ok  # forgotten after REMEMBER_S, checked again: still right


def test_parallel_first_requests_wait_for_one_check() -> None:
    auth = Authenticator(password_hash=hash_password("pw", n=2**12))
    verdicts = []
    threads = [threading.Thread(target=lambda: verdicts.append(auth.check(basic("a", "pw")))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(verdicts) == 4 and all(v.ok for v in verdicts)
