"""
``--auth keystone``: imaged validates ``X-Auth-Token`` against Keystone v3 itself.

This is what keystonemiddleware's ``auth_token`` does in front of Glance, without the WSGI
pipeline: imaged logs in with its own service credentials, asks Keystone about each caller's
token (``GET /v3/auth/tokens`` with ``X-Subject-Token``), and turns the answer into a
``RequestContext``.

Why the rules below:

- Validations are cached (keyed by the token's SHA-256, never the token itself) for at most
  ``cache_seconds`` and never past the token's own ``expires_at``, so a busy API does not ask
  Keystone on every request, an expired token is never accepted, and a revoked token stops
  working within ``cache_seconds`` (keystonemiddleware's ``token_cache_time`` has the same
  trade-off and default).  The cache holds at most ``cache_size`` entries.
- Concurrent requests with the same uncached token share one validation.
- Keystone being unreachable, slow or erring is a 503: an identity that cannot be checked is
  never let in, and a token Keystone refuses is a 401 carrying
  ``WWW-Authenticate: Keystone uri="..."`` so clients know where to authenticate.
- A 401 from Keystone on validation means imaged's own service token went stale (Keystone
  restarted with new keys, the token was revoked); imaged logs in again once and retries.
- imaged's own credentials are checked at start (``CredentialCheck``), not first at a
  client's request: a wrong password, an unknown user or a missing ``service`` role is logged
  in words saying what to fix, ``/healthcheck`` reports it, and the check repeats with
  back-off until Keystone accepts them.  imaged does not refuse to start: at boot Keystone
  may come up after it, and the usual fixes (a role grant, a password reset in Keystone)
  happen in Keystone, without a restart of imaged.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime
from typing import Any

import attrs
import treq
from treq.client import HTTPClient
from twisted.application.service import Service
from twisted.internet.defer import Deferred, ensureDeferred, fail, succeed
from twisted.internet.error import ConnectError, DNSLookupError, TimeoutError
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool, ResponseFailed
from twisted.web.iweb import IRequest

from ..context import RequestContext
from ..errors import IdentityUnavailable, Unauthorized
from .wire import header

log = Logger()

_UNAVAILABLE = "The identity service is unavailable; try again later."
_NETWORK_ERRORS = (ConnectError, DNSLookupError, TimeoutError, ResponseFailed, OSError)


@attrs.frozen
class ServiceCredentials:
    """The service user imaged logs into Keystone as (it needs the ``service`` role)."""

    username: str
    password: str = attrs.field(repr=False)
    project_name: str = "service"
    user_domain_id: str = "default"
    project_domain_id: str = "default"

    def auth_body(self) -> dict[str, Any]:
        return {
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {
                        "user": {
                            "name": self.username,
                            "domain": {"id": self.user_domain_id},
                            "password": self.password,
                        }
                    },
                },
                "scope": {
                    "project": {
                        "name": self.project_name,
                        "domain": {"id": self.project_domain_id},
                    }
                },
            }
        }


@attrs.frozen
class _Validated:
    """What a validation said about one token, and until when we may believe it."""

    project_id: str | None
    user_id: str | None
    roles: frozenset[str]
    believe_until: float
    catalog: tuple[Any, ...] = ()

    def context(self, request_id: str | None, token: str | None = None) -> RequestContext:
        return RequestContext.from_roles(
            self.project_id, self.user_id, self.roles, request_id, token, self.catalog
        )


def _timestamp(value: str) -> float:
    """Keystone's ``expires_at`` (``2026-11-27T17:24:22.000000Z``) as a Unix time."""
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


class KeystoneTokens:
    """The ``keystone`` strategy: ``context(request)`` fires with the token's identity."""

    def __init__(
        self,
        auth_url: str,
        credentials: ServiceCredentials,
        reactor: IReactorTime,
        *,
        public_auth_url: str | None = None,
        cache_seconds: float = 300.0,
        cache_size: int = 10_000,
        timeout: float = 10.0,
        http: Any = None,
    ) -> None:
        self.auth_url = auth_url.rstrip("/")
        if self.auth_url.endswith("/v3"):
            self.auth_url = self.auth_url[: -len("/v3")]
        self.credentials = credentials
        self.challenge = f'Keystone uri="{(public_auth_url or self.auth_url).rstrip("/")}"'
        self.cache_seconds = cache_seconds
        self.cache_size = cache_size
        self.timeout = timeout
        self._reactor = reactor
        if http is None:
            pool = HTTPConnectionPool(reactor, persistent=True)
            http = HTTPClient(Agent(reactor, pool=pool))
        self._http = http
        self._cache: OrderedDict[str, _Validated] = OrderedDict()
        self._in_flight: dict[str, _Shared] = {}
        self._service_token: str | None = None
        self._service_token_until = 0.0
        self._login: _Shared | None = None
        #: Why imaged cannot validate tokens now (``health``), in words saying what to fix.
        self._problem: str | None = None

    def describe(self) -> str:
        c = self.credentials
        return (
            f"'keystone': validates X-Auth-Token with Keystone at {self.auth_url} as service "
            f"user '{c.username}' (project '{c.project_name}'); believes no identity header"
        )

    def health(self) -> str | None:
        return self._problem

    async def check(self) -> str | None:
        """Log in afresh (the start-up check); what is wrong, or ``None``."""
        self._service_token = None
        try:
            await self._service_token_now()
        except IdentityUnavailable:
            pass
        return self._problem

    # -- the strategy ---------------------------------------------------------------------

    def context(self, request: IRequest) -> Deferred[RequestContext]:
        request_id = header(request, b"x-openstack-request-id")
        token = header(request, b"x-auth-token")
        if not token:
            return fail(self._unauthorized())
        key = hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()
        validated = self._cached(key)
        if validated is not None:
            return succeed(validated.context(request_id, token))
        pending = self._in_flight.get(key)
        if pending is None:

            def settle(result: Any) -> None:
                self._in_flight.pop(key, None)
                if isinstance(result, _Validated):
                    self._remember(key, result)

            pending = _Shared(ensureDeferred(self._validate(token)), settle)
            if not pending.done:
                self._in_flight[key] = pending
        return pending.wait().addCallback(lambda v: v.context(request_id, token))

    # -- cache ----------------------------------------------------------------------------

    def _cached(self, key: str) -> _Validated | None:
        validated = self._cache.get(key)
        if validated is None:
            return None
        if validated.believe_until <= self._reactor.seconds():
            del self._cache[key]
            return None
        self._cache.move_to_end(key)
        return validated

    def _remember(self, key: str, validated: _Validated) -> None:
        self._cache[key] = validated
        self._cache.move_to_end(key)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    # -- talking to Keystone --------------------------------------------------------------

    async def _validate(self, token: str, retried: bool = False) -> _Validated:
        service_token = await self._service_token_now()
        response = await self._request(
            "GET",
            "/v3/auth/tokens",
            headers={"X-Auth-Token": service_token, "X-Subject-Token": token},
        )
        body = await self._body(response)
        if response.code in (200, 404) and self._problem is not None:
            self._problem = None
            log.info("Keystone lets imaged validate tokens again")
        if response.code == 200:
            return self._read_token(body)
        if response.code == 404:
            raise self._unauthorized()
        if response.code == 401 and not retried:
            self._service_token = None  # ours went stale: log in again, once
            return await self._validate(token, retried=True)
        if response.code == 403:
            c = self.credentials
            self._problem = (
                f"Keystone does not let imaged's service user '{c.username}' validate tokens "
                f"(403): give it the 'service' role in project '{c.project_name}'"
            )
        log.error(
            "Keystone answered {code} validating a token: {body}",
            code=response.code,
            body=body[:200],
        )
        raise IdentityUnavailable(_UNAVAILABLE)

    def _read_token(self, body: bytes) -> _Validated:
        try:
            token = json.loads(body)["token"]
            project = token.get("project") or {}
            roles = frozenset(role["name"] for role in token.get("roles") or ())
            expires = _timestamp(token["expires_at"])
            catalog = tuple(token.get("catalog") or ())
        except (ValueError, KeyError, TypeError) as e:
            log.error("Keystone's token document is not readable: {error}", error=e)
            raise IdentityUnavailable(_UNAVAILABLE) from None
        now = self._reactor.seconds()
        if expires <= now:
            raise self._unauthorized()
        return _Validated(
            project_id=project.get("id"),
            user_id=(token.get("user") or {}).get("id"),
            roles=roles,
            believe_until=min(expires, now + self.cache_seconds),
            catalog=catalog,
        )

    async def _service_token_now(self) -> str:
        if self._service_token and self._service_token_until > self._reactor.seconds():
            return self._service_token
        if self._login is None:

            def done(result: Any) -> None:
                self._login = None

            login = _Shared(ensureDeferred(self._log_in()), done)
            if not login.done:
                self._login = login
        else:
            login = self._login
        token: str = await login.wait()
        return token

    async def _log_in(self) -> str:
        response = await self._request(
            "POST",
            "/v3/auth/tokens",
            data=json.dumps(self.credentials.auth_body()).encode(),
            headers={"Content-Type": "application/json"},
        )
        body = await self._body(response)
        token = response.headers.getRawHeaders(b"x-subject-token", [None])[0]
        c = self.credentials
        if response.code != 201 or token is None:
            if response.code == 401:
                self._problem = (
                    f"Keystone refused imaged's service credentials (user '{c.username}' in "
                    f"domain '{c.user_domain_id}', project '{c.project_name}'): check "
                    "--keystone-user, --keystone-password-file and the user's project role"
                )
            else:
                self._problem = f"Keystone answered {response.code} to imaged's login"
            log.error(
                "imaged could not log into Keystone as {user}: {code} {body}",
                user=c.username,
                code=response.code,
                body=body[:200],
            )
            raise IdentityUnavailable(_UNAVAILABLE)
        try:
            document = json.loads(body)["token"]
            expires = _timestamp(document["expires_at"])
            roles = {role["name"] for role in document.get("roles") or ()}
        except (ValueError, KeyError, TypeError):
            expires = self._reactor.seconds() + 300
            roles = set()
        if roles.isdisjoint({"service", "admin"}):
            # Keystone's default policy lets only the service role (or an admin) validate
            # another's token: every client would see 503.  Said now, not at the first request.
            self._problem = (
                f"imaged's service user '{c.username}' lacks the 'service' role in project "
                f"'{c.project_name}' (openstack role add --user {c.username} --project "
                f"{c.project_name} service); Keystone will not let it validate tokens"
            )
        else:
            self._problem = None
        # Renew early (a minute, or a quarter of a short lifetime), so that the token never
        # expires between our check and Keystone's.
        now = self._reactor.seconds()
        self._service_token_until = expires - min(60.0, max(0.0, expires - now) / 4)
        self._service_token = token.decode("latin-1")
        return self._service_token

    async def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            return await self._http.request(
                method, self.auth_url + path, timeout=self.timeout, **kwargs
            )
        except _NETWORK_ERRORS as e:
            log.error(
                "Keystone at {url} is unreachable: {error}", url=self.auth_url, error=e
            )
            self._problem = f"Keystone at {self.auth_url} is unreachable"
            raise IdentityUnavailable(_UNAVAILABLE) from None

    async def _body(self, response: Any) -> bytes:
        try:
            body: bytes = await treq.content(response)
        except _NETWORK_ERRORS:
            raise IdentityUnavailable(_UNAVAILABLE) from None
        return body

    def _unauthorized(self) -> Unauthorized:
        return Unauthorized(
            "The request you have made requires authentication.", challenge=self.challenge
        )




class CredentialCheck(Service):
    """
    Checks imaged's Keystone credentials when the daemon starts, and again with back-off
    (``first_retry`` doubling up to ``max_retry`` seconds) until Keystone accepts them; each
    failure is one error line saying what to fix.
    """

    def __init__(
        self,
        tokens: KeystoneTokens,
        clock: IReactorTime,
        first_retry: float = 5.0,
        max_retry: float = 300.0,
    ) -> None:
        self.tokens = tokens
        self.clock = clock
        self.first_retry = first_retry
        self.max_retry = max_retry
        self._delay = first_retry
        self._next: IDelayedCall | None = None
        self._running: Deferred[None] | None = None

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        self._delay = self.first_retry
        self._check()

    def stopService(self) -> None:
        super().stopService()  # type: ignore[no-untyped-call]
        if self._next is not None and self._next.active():
            self._next.cancel()
        self._next = None

    def _check(self) -> None:
        self._next = None
        self._running = ensureDeferred(self._once())

    async def _once(self) -> None:
        problem = await self.tokens.check()
        if not self.running:
            return
        user = self.tokens.credentials.username
        if problem is None:
            log.info(
                "Keystone accepts imaged's service credentials (user {user})", user=user
            )
            return
        log.error(
            "imaged cannot validate tokens: {problem}; checking again in {delay:.0f} s",
            problem=problem,
            delay=self._delay,
        )
        self._next = self.clock.callLater(self._delay, self._check)
        self._delay = min(self._delay * 2, self.max_retry)


class _Shared:
    """
    One piece of work (a validation, a login) that several requests wait for.

    ``on_done`` sees the result first (to cache it and forget the work), then every waiter
    gets it; a waiter arriving after the end gets it at once.
    """

    def __init__(self, work: Deferred[Any], on_done: Callable[[Any], None]) -> None:
        self.done = False
        self._result: Any = None
        self._waiters: list[Deferred[Any]] = []
        self._on_done = on_done
        work.addBoth(self._fire)

    def wait(self) -> Deferred[Any]:
        if self.done:
            return fail(self._result) if isinstance(self._result, Failure) else succeed(
                self._result
            )
        waiter: Deferred[Any] = Deferred()
        self._waiters.append(waiter)
        return waiter

    def _fire(self, result: Any) -> None:
        self.done, self._result = True, result
        self._on_done(result)
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(result)
