"""Basic auth on every endpoint (users from --web.config.file), as exporter-toolkit does it.

bcrypt is slow on purpose (tens of ms per check), so it runs in a worker thread, never on the
event loop that times the probes, and a verified user:password is remembered for a short
while under a keyed digest (never in clear). An unknown user costs a bcrypt check too, so
timing does not tell which user names exist; failures are never cached. Nothing here logs
or returns a password or a hash. With no users configured every request passes, as in
exporter-toolkit; users can be replaced while running (a re-read web config).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping

import bcrypt
from aiohttp import web

REALM = "meta-outage-exporter"
CACHE_SECONDS = 60.0
CACHE_MAX = 1024
BCRYPT_MAX_PASSWORD = 72  # bytes; bcrypt ignores (and bcrypt>=5 refuses) anything longer

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def parse_basic(header: str) -> tuple[str, bytes] | None:
    """(user, password) from an Authorization header, or None if it is not valid Basic."""
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, sep, password = decoded.partition(b":")
    if not sep:
        return None
    try:
        return user.decode(), password
    except UnicodeDecodeError:
        return None


class BasicAuth:
    """Checks credentials against bcrypt hashes, with a short cache of successes."""

    def __init__(
        self,
        users: Mapping[str, bytes],
        *,
        cache_seconds: float = CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._users = dict(users)
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._key = secrets.token_bytes(32)  # per process: cache digests mean nothing elsewhere
        self._verified: dict[bytes, float] = {}
        # Any valid hash works: it only makes unknown users cost as much as known ones.
        self._decoy = bcrypt.hashpw(b"decoy", bcrypt.gensalt(rounds=10))

    def replace_users(self, users: Mapping[str, bytes]) -> None:
        """New users take effect at the next request; remembered successes are forgotten, so
        a removed user or a changed password is refused at once."""
        self._users = dict(users)
        self._verified.clear()

    def _digest(self, user: str, password: bytes, hashed: bytes) -> bytes:
        message = user.encode() + b"\0" + password + b"\0" + hashed
        return hmac.new(self._key, message, hashlib.sha256).digest()

    async def verify(self, user: str, password: bytes) -> bool:
        hashed = self._users.get(user)
        if len(password) > BCRYPT_MAX_PASSWORD:
            return False
        if hashed is None:
            await asyncio.to_thread(bcrypt.checkpw, password, self._decoy)
            return False
        digest = self._digest(user, password, hashed)
        now = self._clock()
        expires = self._verified.get(digest)
        if expires is not None and expires > now:
            return True
        try:
            ok = await asyncio.to_thread(bcrypt.checkpw, password, hashed)
        except ValueError:  # a hash bcrypt cannot read (the config validated its shape)
            return False
        if ok:
            if len(self._verified) >= CACHE_MAX:
                self._verified = {d: t for d, t in self._verified.items() if t > now}
                if len(self._verified) >= CACHE_MAX:
                    self._verified.clear()
            self._verified[digest] = now + self._cache_seconds
        return ok

    def middleware(self) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
        @web.middleware
        async def basic_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
            if not self._users:
                return await handler(request)
            credentials = parse_basic(request.headers.get("Authorization", ""))
            if credentials is None or not await self.verify(*credentials):
                return unauthorized()
            return await handler(request)

        return basic_auth


def unauthorized() -> web.Response:
    return web.Response(
        status=401,
        text="Unauthorized\n",
        headers={"WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"'},
    )


def middlewares(auth: BasicAuth | None) -> list:  # type: ignore[type-arg]
    """The middleware list for the app: basic auth with a web config, else none."""
    return [auth.middleware()] if auth is not None else []
