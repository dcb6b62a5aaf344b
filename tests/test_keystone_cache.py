"""
The keystone strategy's own rules, against an in-memory Keystone and a fake clock: what is
cached and for how long, shared validations, service-token renewal, failures as 503.

(The real Keystone is driven by ``test_keystone.py``; these cover what timing there cannot.)
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from treq.testing import StubTreq
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.web.resource import Resource
from twisted.web.test.requesthelper import DummyRequest

from imaged.context import RequestContext
from imaged.errors import IdentityUnavailable, Unauthorized
from imaged.web.keystone import CredentialCheck, KeystoneTokens, ServiceCredentials

from .conftest import fired

CREDENTIALS = ServiceCredentials(username="imaged", password="secret")


def _iso(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%S.000000Z")


class FakeKeystone(Resource):
    """``/v3/auth/tokens``: POST logs the service user in, GET validates a subject token."""

    isLeaf = True

    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self.clock = clock
        self.tokens: dict[str, dict[str, Any]] = {}
        self.service_tokens: set[str] = set()
        self.logins = 0
        self.login_attempts = 0
        self.validations = 0
        self.status: int | None = None  # forced answer, to play a broken Keystone
        self.password = CREDENTIALS.password  # what the service user's password is now
        self.service_roles = ["service"]  # the service user's roles in its project

    def issue(self, token: str, project: str | None, roles: list[str],
              lifetime: float = 3600) -> None:
        self.tokens[token] = {
            "expires_at": _iso(self.clock.seconds() + lifetime),
            "user": {"id": "u-" + token},
            "project": {"id": project} if project else None,
            "roles": [{"id": r, "name": r} for r in roles],
        }

    def render_POST(self, request: Any) -> bytes:
        body = json.loads(request.content.read())
        password = body["auth"]["identity"]["password"]["user"]["password"]
        self.login_attempts += 1
        if password != self.password:
            request.setResponseCode(401)
            return b"{}"
        self.logins += 1
        token = f"svc-{self.logins}"
        self.service_tokens.add(token)
        request.setResponseCode(201)
        request.setHeader(b"x-subject-token", token.encode())
        roles = [{"id": r, "name": r} for r in self.service_roles]
        return json.dumps({"token": {"expires_at": _iso(self.clock.seconds() + 3600),
                                     "roles": roles}}).encode()

    def render_GET(self, request: Any) -> bytes:
        self.validations += 1
        if self.status is not None:
            request.setResponseCode(self.status)
            return b"broken"
        if request.getHeader(b"x-auth-token").decode() not in self.service_tokens:
            request.setResponseCode(401)
            return b"{}"
        token = self.tokens.get(request.getHeader(b"x-subject-token").decode())
        if token is None:
            request.setResponseCode(404)
            return b"{}"
        return json.dumps({"token": token}).encode()


class HeldHTTP:
    """treq's ``request`` over the fake Keystone, optionally held back or refused."""

    def __init__(self, keystone: FakeKeystone) -> None:
        self.stub = StubTreq(keystone)
        self.hold = False
        self.refuse = False
        self.held: list[tuple[Deferred[Any], tuple[Any, ...], dict[str, Any]]] = []

    def request(self, *args: Any, **kwargs: Any) -> Deferred[Any]:
        kwargs.pop("timeout", None)
        if self.refuse:
            raise ConnectionRefusedError("keystone is down")
        if self.hold:
            waiting: Deferred[Any] = Deferred()
            self.held.append((waiting, args, kwargs))
            return waiting
        return self.stub.request(*args, **kwargs)

    def release(self) -> None:
        held, self.held = self.held, []
        for waiting, args, kwargs in held:
            self.stub.request(*args, **kwargs).chainDeferred(waiting)


@pytest.fixture
def clock() -> Clock:
    clock = Clock()
    clock.advance(1_800_000_000)
    return clock


@pytest.fixture
def keystone(clock: Clock) -> FakeKeystone:
    return FakeKeystone(clock)


@pytest.fixture
def http(keystone: FakeKeystone) -> HeldHTTP:
    return HeldHTTP(keystone)


def tokens(clock: Clock, http: HeldHTTP, **kwargs: Any) -> KeystoneTokens:
    return KeystoneTokens("http://keystone.test/v3", CREDENTIALS, clock, http=http, **kwargs)


def request_with(token: str | None) -> DummyRequest:
    request = DummyRequest([b""])
    if token is not None:
        request.requestHeaders.setRawHeaders(b"x-auth-token", [token.encode()])
    request.requestHeaders.setRawHeaders(b"x-openstack-request-id", [b"req-1"])
    return request


def identity(strategy: KeystoneTokens, token: str | None) -> RequestContext:
    result: RequestContext = fired(strategy.context(request_with(token)))
    return result


def refused(strategy: KeystoneTokens, token: str | None) -> Exception:
    d = strategy.context(request_with(token))
    failures: list[Any] = []
    d.addErrback(failures.append)
    assert failures, "the strategy let the request in"
    error: Exception = failures[0].value
    return error


def test_a_valid_token_becomes_its_project_user_and_roles(
    clock: Clock, keystone: FakeKeystone, http: HeldHTTP
) -> None:
    keystone.issue("t1", "p1", ["member", "reader"])
    context = identity(tokens(clock, http), "t1")
    assert (context.project_id, context.user_id) == ("p1", "u-t1")
    assert context.roles == {"member", "reader"}
    assert not context.is_admin
    assert context.request_id == "req-1"
    keystone.issue("boss", "p1", ["admin"])
    assert identity(tokens(clock, http), "boss").is_admin


def test_missing_and_unknown_tokens_are_401_with_the_challenge(
    clock: Clock, keystone: FakeKeystone, http: HeldHTTP
) -> None:
    strategy = tokens(clock, http, public_auth_url="https://id.example.test:5000/")
    for token in (None, "", "nope"):
        error = refused(strategy, token)
        assert isinstance(error, Unauthorized)
        assert error.challenge == 'Keystone uri="https://id.example.test:5000"'


def test_validations_are_believed_for_the_cache_time_only(
    clock: Clock, keystone: FakeKeystone, http: HeldHTTP
) -> None:
    strategy = tokens(clock, http, cache_seconds=30)
    keystone.issue("t1", "p1", ["reader"])
    identity(strategy, "t1")
    clock.advance(29)
    identity(strategy, "t1")
    assert keystone.validations == 1
    del keystone.tokens["t1"]  # revoked
    clock.advance(2)
    assert isinstance(refused(strategy, "t1"), Unauthorized)
    assert keystone.validations == 2


def test_a_cached_validation_never_outlives_the_token(
    clock: Clock, keystone: FakeKeystone, http: HeldHTTP
) -> None:
    strategy = tokens(clock, http, cache_seconds=300)
    keystone.issue("short", "p1", ["reader"], lifetime=5)
    identity(strategy, "short")
    clock.advance(6)
    # Keystone would still answer (it is a fake that forgets nothing): imaged must not ask
    # and believe an expired token.
    assert isinstance(refused(strategy, "short"), Unauthorized)


def test_the_cache_is_bounded(clock: Clock, keystone: FakeKeystone, http: HeldHTTP) -> None:
    strategy = tokens(clock, http, cache_size=2)
    for token in ("a", "b", "c"):
        keystone.issue(token, "p1", ["reader"])
        identity(strategy, token)
    identity(strategy, "c")
    identity(strategy, "b")
    assert keystone.validations == 3
    identity(strategy, "a")  # evicted as the least recently used
    assert keystone.validations == 4


def test_concurrent_requests_with_one_token_share_one_validation(
    clock: Clock, keystone: FakeKeystone, http: HeldHTTP
) -> None:
    strategy = tokens(clock, http)
    keystone.issue("t1", "p1", ["reader"])
    http.hold = True
    pending = [strategy.context(request_with("t1")) for _ in range(5)]
    assert len(http.held) == 1  # the service login
    http.hold = False
    http.release()
    assert keystone.logins == 1 and keystone.validations == 1
    assert all(fired(d).project_id == "p1" for d in pending)


def test_a_stale_service_token_is_renewed_once(
    clock: Clock, keystone: FakeKeystone, http: HeldHTTP
) -> None:
    strategy = tokens(clock, http)
    keystone.issue("t1", "p1", ["reader"])
    keystone.issue("t2", "p1", ["reader"])
    identity(strategy, "t1")
    keystone.service_tokens.clear()  # Keystone rotated its keys, say
    assert identity(strategy, "t2").project_id == "p1"
    assert keystone.logins == 2


@pytest.mark.parametrize("status", [500, 503, 401])
def test_keystone_erring_is_unavailable_never_access(
    clock: Clock, keystone: FakeKeystone, http: HeldHTTP, status: int
) -> None:
    strategy = tokens(clock, http)
    keystone.issue("t1", "p1", ["admin"])
    keystone.status = status
    assert isinstance(refused(strategy, "t1"), IdentityUnavailable)
    keystone.status = None
    assert identity(strategy, "t1").is_admin  # a failure is not cached


def test_keystone_unreachable_is_unavailable(
    clock: Clock, keystone: FakeKeystone, http: HeldHTTP
) -> None:
    strategy = tokens(clock, http)
    keystone.issue("t1", "p1", ["reader"])
    http.refuse = True
    assert isinstance(refused(strategy, "t1"), IdentityUnavailable)


def test_wrong_service_password_is_unavailable(
    clock: Clock, keystone: FakeKeystone, http: HeldHTTP
) -> None:
    strategy = KeystoneTokens(
        "http://keystone.test", ServiceCredentials("imaged", "wrong"), clock, http=http
    )
    keystone.issue("t1", "p1", ["reader"])
    assert isinstance(refused(strategy, "t1"), IdentityUnavailable)
    assert "wrong" not in repr(strategy.credentials)


# -- imaged's own credentials, checked at start and reported by /healthcheck --------------------


def test_wrong_credentials_are_reported_and_checked_again_with_back_off(
    clock: Clock, keystone: FakeKeystone, http: HeldHTTP
) -> None:
    keystone.password = "changed-in-keystone"
    strategy = tokens(clock, http)
    check = CredentialCheck(strategy, clock, first_retry=5, max_retry=20)
    check.startService()
    assert keystone.login_attempts == 1
    problem = strategy.health()
    assert problem is not None and problem.startswith(
        "Keystone refused imaged's service credentials (user 'imaged' in domain 'default', "
        "project 'service'): check --keystone-user, --keystone-password-file")
    # back-off: 5, 10, 20, then 20 s (the cap) between attempts; nothing in between
    for wait, attempts in ((4.9, 1), (0.1, 2), (9.9, 2), (0.1, 3), (20, 4), (20, 5)):
        clock.advance(wait)
        assert keystone.login_attempts == attempts, wait
    # Fixed in Keystone (no restart of imaged): the next attempt succeeds and checking stops.
    keystone.password = CREDENTIALS.password
    clock.advance(20)
    assert keystone.login_attempts == 6 and strategy.health() is None
    assert clock.getDelayedCalls() == []
    check.stopService()


def test_a_service_user_without_the_service_role_is_reported_at_start(
    clock: Clock, keystone: FakeKeystone, http: HeldHTTP
) -> None:
    keystone.service_roles = ["member", "reader"]
    strategy = tokens(clock, http)
    check = CredentialCheck(strategy, clock, first_retry=5)
    check.startService()
    assert strategy.health() == (
        "imaged's service user 'imaged' lacks the 'service' role in project 'service' "
        "(openstack role add --user imaged --project service service); Keystone will not let "
        "it validate tokens")
    keystone.service_roles = ["service"]
    clock.advance(5)
    assert strategy.health() is None and clock.getDelayedCalls() == []
    check.stopService()


def test_stopping_cancels_the_next_check(
    clock: Clock, keystone: FakeKeystone, http: HeldHTTP
) -> None:
    http.refuse = True
    strategy = tokens(clock, http)
    check = CredentialCheck(strategy, clock, first_retry=5)
    check.startService()
    assert strategy.health() == "Keystone at http://keystone.test is unreachable"
    assert len(clock.getDelayedCalls()) == 1
    check.stopService()
    assert clock.getDelayedCalls() == []


def test_a_refused_validation_is_reported_until_keystone_allows_it_again(
    clock: Clock, keystone: FakeKeystone, http: HeldHTTP
) -> None:
    keystone.issue("t1", "p1", ["member"])
    strategy = tokens(clock, http, cache_seconds=0)
    keystone.status = 403  # e.g. the service role was removed after the start
    assert isinstance(refused(strategy, "t1"), IdentityUnavailable)
    problem = strategy.health()
    assert problem is not None and (
        "does not let imaged's service user 'imaged' validate tokens (403)" in problem)
    keystone.status = None
    assert identity(strategy, "t1").project_id == "p1"
    assert strategy.health() is None


def test_healthcheck_reports_the_identity_problem(
    clock: Clock, keystone: FakeKeystone, http: HeldHTTP, services: Any
) -> None:
    from imaged.api import APIConfig, routes

    from .conftest import Client

    strategy = tokens(clock, http)
    client = Client(routes(APIConfig(image_service=services(), auth=strategy)).resource())
    assert client.get("/healthcheck").body == b"OK"
    keystone.password = "changed-in-keystone"
    fired(Deferred.fromCoroutine(strategy.check()))
    reply = client.get("/healthcheck", headers={"Accept": "application/json"})
    assert reply.code == 503
    [reason] = reply.json()["reasons"]
    assert reason.startswith("identity: Keystone refused imaged's service credentials")
    assert client.request("HEAD", "/healthcheck").code == 503
    keystone.password = CREDENTIALS.password
    fired(Deferred.fromCoroutine(strategy.check()))
    assert client.get("/healthcheck").code == 200
