"""Authentication (JWT) and authorization (roles) for the REST API.

Modes (`AGENTFLOW_AUTH`, see SECURITY.md):

- `required` (default in distributed mode): every route but the public ones of
  `roles.PERMISSIONS` (/health, /health/ready, /schema, the docs, Studio's files) needs
  `Authorization: Bearer <jwt>`.
- `local` (default in embedded mode): a request from this machine (loopback client, a
  loopback Host header and no cross-site Origin) without a token acts as the local admin,
  so `make run` and the Studio work at once; any other request needs a token. A request
  that carries a token is always verified. The local admin token is kept in
  AGENTFLOW_HOME (mode 0600) and handed to Studio by `GET /auth/local-token` (loopback only).
- `off`: no authentication; every caller is the admin of tenant "default".

Tokens: HS256 signed with `AGENTFLOW_JWT_SECRET` (or, when it is unset, a random secret
generated once in AGENTFLOW_HOME/jwt-secret), or RS256/ES256 from an external identity
provider (`AGENTFLOW_JWT_PUBLIC_KEY` PEM or `AGENTFLOW_JWKS_URL`). Claims: `sub`,
`tenant`, `role` (names configurable), `exp` (required), `iss`/`aud` when configured.

`authorize` is the one dependency every API route runs (installed on the app): it
authenticates, applies the per-tenant request limit, checks the route's role in
`roles.PERMISSIONS`, and leaves the Principal for `deps.current_tenant`.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import secrets as pysecrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
import jwt
from fastapi import Request

from ..graph.secrets import remember
from ..settings import Settings, get_settings
from ..store.models import DEFAULT_TENANT
from . import roles
from .errors import ApiError

log = logging.getLogger("agentflow.api.auth")

SECRET_FILE = "jwt-secret"
LOCAL_TOKEN_FILE = "local-admin.token"
LOCAL_SUBJECT = "local-admin"
LOCAL_TOKEN_TTL = 365 * 24 * 3600
LOCAL_TOKEN_RENEW = 7 * 24 * 3600      # re-issue a stored local token that expires sooner
LEEWAY_SECONDS = 30
HMAC_ALGORITHMS = ["HS256"]
PUBLIC_KEY_ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "ES256", "ES384"]
TENANT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
SECURITY_SCOPE_KEY = "agentflow.security"  # per-request dict shared with the audit middleware

# Starlette's TestClient connects as "testclient" to Host "testserver": both names can only
# come from an in-process test, never from the network (a real client is an IP address).
TEST_CLIENT, TEST_HOST = "testclient", "testserver"
LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


class AuthConfigError(RuntimeError):
    """The settings cannot sign or verify tokens as asked."""


@dataclass(frozen=True)
class Principal:
    subject: str
    tenant: str
    role: str
    via: str  # "token", "local" (tokenless loopback in local mode), "off", "public"

    def allows(self, role: str) -> bool:
        return roles.role_allows(self.role, role)


PUBLIC_PRINCIPAL = Principal("anonymous", DEFAULT_TENANT, "none", "public")


def unauthorized(detail: str) -> ApiError:
    return ApiError(401, detail, headers={"WWW-Authenticate": 'Bearer realm="agentflow"'})


# ---------------------------------------------------------------- files in AGENTFLOW_HOME


def _write_private(path: Path, text: str, exclusive: bool) -> bool:
    """Write `text` to a new file readable by its owner only. With `exclusive`, False
    when the file already exists (another process made it first)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.chmod(path, 0o600)
    return True


def _read_private(path: Path) -> str | None:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        log.warning("%s was readable by other users (mode %o); made it 0600", path, mode)
        os.chmod(path, 0o600)
    return text or None


def home_secret(home: Path) -> str:
    """The HS256 secret kept in AGENTFLOW_HOME, generated on first use."""
    path = Path(home) / SECRET_FILE
    for _ in range(3):
        value = _read_private(path)
        if value:
            return value
        if _write_private(path, pysecrets.token_urlsafe(48), exclusive=True):
            log.info("generated a JWT signing secret in %s", path)
    value = _read_private(path)
    if not value:
        raise AuthConfigError(f"cannot create the JWT secret file {path}")
    return value


# ---------------------------------------------------------------- configuration


@dataclass
class AuthConfig:
    mode: str
    home: Path
    secret: str | None = None
    public_key: str | None = None
    jwks_url: str | None = None
    issuer: str | None = None
    audience: str | None = None
    tenant_claim: str = "tenant"
    role_claim: str = "role"
    secret_source: str = ""

    def __post_init__(self) -> None:
        self._jwks = None
        self._lock = threading.Lock()
        self._local_token: str | None = None
        if self.secret:
            remember(self.secret)  # redacted from logs and errors like any other secret

    @classmethod
    def from_settings(cls, settings: Settings) -> "AuthConfig":
        mode = settings.auth_mode
        home = Path(settings.home)
        public = settings.jwt_public_key or None
        if public and "\\n" in public and "\n" not in public:  # a PEM squeezed into one env line
            public = public.replace("\\n", "\n")
        secret, source = settings.jwt_secret or None, "AGENTFLOW_JWT_SECRET"
        if not secret and mode != "off" and (mode == "local" or not (public or settings.jwks_url)):
            # local mode signs its own admin token; required mode without any key
            # configured still works for the machines sharing this AGENTFLOW_HOME.
            secret, source = home_secret(home), str(home / SECRET_FILE)
        return cls(mode=mode, home=home, secret=secret, public_key=public, jwks_url=settings.jwks_url or None,
                   issuer=settings.jwt_issuer or None, audience=settings.jwt_audience or None,
                   tenant_claim=settings.jwt_tenant_claim or "tenant", role_claim=settings.jwt_role_claim or "role",
                   secret_source=source if secret else "")

    def describe(self) -> str:
        keys = []
        if self.secret:
            keys.append(f"HS256 secret from {self.secret_source}")
        if self.public_key:
            keys.append("public key from AGENTFLOW_JWT_PUBLIC_KEY")
        if self.jwks_url:
            keys.append(f"JWKS at {self.jwks_url}")
        return f"auth {self.mode}" + (f" ({'; '.join(keys)})" if keys else "")

    # ---- issuing

    def issue(self, *, tenant: str, role: str, ttl_seconds: int, subject: str) -> str:
        if not self.secret:
            raise AuthConfigError("no signing secret: tokens come from your identity provider "
                                  "(AGENTFLOW_JWT_PUBLIC_KEY / AGENTFLOW_JWKS_URL), or set AGENTFLOW_JWT_SECRET")
        if role not in roles.RANK:
            raise ValueError(f"role must be one of {', '.join(roles.ROLES)}, not {role!r}")
        if not isinstance(tenant, str) or not TENANT_RE.match(tenant):
            raise ValueError("tenant must be 1-64 letters, digits, '.', '_' or '-' (starting with a letter or digit)")
        if not subject or len(subject) > 256:
            raise ValueError("subject must be 1-256 characters")
        if int(ttl_seconds) <= 0:
            raise ValueError("ttl must be a positive number of seconds")
        now = int(time.time())
        claims: dict[str, Any] = {"sub": subject, self.tenant_claim: tenant, self.role_claim: role,
                                  "iat": now, "nbf": now - 1, "exp": now + int(ttl_seconds),
                                  "jti": pysecrets.token_hex(8)}
        if self.issuer:
            claims["iss"] = self.issuer
        if self.audience:
            claims["aud"] = self.audience
        return jwt.encode(claims, self.secret, algorithm="HS256")

    # ---- verifying

    def _jwks_client(self):
        with self._lock:
            if self._jwks is None:
                self._jwks = jwt.PyJWKClient(self.jwks_url, cache_keys=True, lifespan=300, timeout=5)
            return self._jwks

    def verify(self, token: str) -> Principal:
        """The principal a token names, or a 401 ApiError saying why not."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise unauthorized("invalid token: not a JWT") from None
        alg = header.get("alg")
        if alg in HMAC_ALGORITHMS and self.secret:
            key: Any = self.secret
            algorithms = HMAC_ALGORITHMS
        elif alg in PUBLIC_KEY_ALGORITHMS and (self.public_key or self.jwks_url):
            algorithms = PUBLIC_KEY_ALGORITHMS
            if self.public_key:
                key = self.public_key
            else:
                try:
                    key = self._jwks_client().get_signing_key_from_jwt(token).key
                except jwt.PyJWKClientConnectionError as exc:
                    raise ApiError(503, f"cannot reach the identity provider's JWKS: {exc}",
                                   headers={"Retry-After": "5"}) from None
                except jwt.PyJWTError as exc:
                    raise unauthorized(f"invalid token: {exc}") from None
        else:
            raise unauthorized(f"invalid token: algorithm {alg!r} is not accepted")
        options = {"require": ["exp", "sub"], "verify_aud": bool(self.audience)}
        try:
            claims = jwt.decode(token, key, algorithms=algorithms, audience=self.audience, issuer=self.issuer,
                                leeway=LEEWAY_SECONDS, options=options)
        except jwt.ExpiredSignatureError:
            raise unauthorized("token expired") from None
        except jwt.InvalidSignatureError:
            raise unauthorized("invalid token: signature verification failed") from None
        except jwt.PyJWTError as exc:
            raise unauthorized(f"invalid token: {exc}") from None
        tenant = claims.get(self.tenant_claim)
        if not isinstance(tenant, str) or not TENANT_RE.match(tenant):
            raise unauthorized(f"invalid token: claim {self.tenant_claim!r} must name a tenant")
        role = roles.highest_role(claims.get(self.role_claim))
        if role is None:
            raise unauthorized(f"invalid token: claim {self.role_claim!r} must be one of {', '.join(roles.ROLES)}")
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject or len(subject) > 256:
            raise unauthorized("invalid token: claim 'sub' must be a string of 1-256 characters")
        return Principal(subject, tenant, role, "token")

    # ---- the local admin token (local mode)

    @property
    def local_token_path(self) -> Path:
        return self.home / LOCAL_TOKEN_FILE

    def local_token(self) -> str:
        """The local admin token, from AGENTFLOW_HOME, (re)issued when missing, unusable
        or about to expire. Never logged."""
        with self._lock:
            token = self._local_token or _read_private(self.local_token_path)
            if token and self._still_good(token):
                self._local_token = token
                remember(token)
                return token
            token = self.issue(tenant=DEFAULT_TENANT, role="admin", ttl_seconds=LOCAL_TOKEN_TTL,
                               subject=LOCAL_SUBJECT)
            _write_private(self.local_token_path, token + "\n", exclusive=False)
            log.info("wrote a local admin token to %s", self.local_token_path)
            self._local_token = token
            remember(token)
            return token

    def _still_good(self, token: str) -> bool:
        try:
            principal = self.verify(token)
            exp = jwt.decode(token, options={"verify_signature": False}).get("exp", 0)
        except ApiError:
            return False
        return principal.role == "admin" and exp - time.time() > LOCAL_TOKEN_RENEW


def issue_token(tenant: str = DEFAULT_TENANT, role: str = "admin", ttl_seconds: int = 3600,
                subject: str = "cli", settings: Settings | None = None) -> str:
    """A signed token (`agentflow token create`): with AGENTFLOW_JWT_SECRET, else with the
    secret kept in AGENTFLOW_HOME (the one a local or key-less server verifies with)."""
    settings = settings or get_settings()
    cfg = AuthConfig.from_settings(settings)
    if not cfg.secret and not (cfg.public_key or cfg.jwks_url):
        cfg.secret = home_secret(Path(settings.home))  # AGENTFLOW_AUTH=off: still usable later
    return cfg.issue(tenant=tenant, role=role, ttl_seconds=ttl_seconds, subject=subject)


# ---------------------------------------------------------------- local requests


def _loopback_ip(host: str | None) -> bool:
    if not host:
        return False
    try:
        ip = ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def client_host(scope) -> str | None:
    client = scope.get("client")
    return client[0] if client else None


def client_is_loopback(scope) -> bool:
    host = client_host(scope)
    return host == TEST_CLIENT or _loopback_ip(host)


# scope key: a list holding the (address,) of a per-IP limit check not made yet
# (api/abuse.py's RateLimitMiddleware leaves it; `authorize` makes it with the tenant's,
# in one round trip). A list, because routers hand copies of the scope down: whoever
# makes the check empties the shared list.
PENDING_IP = "agentflow.ip_limit"


def take_pending_ip(scope) -> tuple[str | None] | None:
    """The address check `RateLimitMiddleware` left for `authorize`, now claimed."""
    pending = scope.get(PENDING_IP)
    return pending.pop() if pending else None


def _hostname(value: str) -> str | None:
    try:
        return urlsplit(value if "//" in value else f"//{value}").hostname
    except ValueError:
        return None


def _loopback_name(name: str | None) -> bool:
    return bool(name) and (name.lower() in LOOPBACK_NAMES or _loopback_ip(name))


def is_local_request(request: Request) -> bool:
    """A request from this machine that no web page of another site can have made:
    loopback client, a loopback Host (no DNS rebinding) and, when the browser says where
    it comes from (Origin, Sec-Fetch-Site), a loopback origin."""
    scope = request.scope
    if not client_is_loopback(scope):
        return False
    headers = request.headers
    host = _hostname(headers.get("host", ""))
    if not (_loopback_name(host) or (host == TEST_HOST and client_host(scope) == TEST_CLIENT)):
        return False
    origin = headers.get("origin")
    if origin is not None and not _loopback_name(_hostname(origin) if origin != "null" else None):
        return False
    if headers.get("sec-fetch-site", "").lower() == "cross-site":
        return False
    return True


# ---------------------------------------------------------------- the dependency


def auth_config(request: Request) -> AuthConfig:
    cfg = getattr(request.app.state, "auth", None)
    if cfg is None:  # an app built without create_app (tests of single routers)
        settings = getattr(getattr(request.app.state, "services", None), "settings", None) or get_settings()
        cfg = request.app.state.auth = AuthConfig.from_settings(settings)
    return cfg


def bearer_token(request: Request) -> str | None:
    """The token of `Authorization: Bearer <token>`; None without the header."""
    value = request.headers.get("authorization")
    if value is None:
        return None
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise unauthorized("unsupported Authorization header: send 'Bearer <token>'")
    return token.strip()


def authenticate(request: Request, cfg: AuthConfig | None = None) -> Principal:
    cfg = cfg or auth_config(request)
    if cfg.mode == "off":
        return Principal("anonymous", DEFAULT_TENANT, "admin", "off")
    token = bearer_token(request)
    if token is not None:
        return cfg.verify(token)
    if cfg.mode == "local" and is_local_request(request):
        return Principal(LOCAL_SUBJECT, DEFAULT_TENANT, "admin", "local")
    raise unauthorized("authentication required: send 'Authorization: Bearer <token>' "
                       "(`agentflow token create --tenant T --role R` issues one)")


def route_template(request: Request) -> str | None:
    route = request.scope.get("route")
    return getattr(route, "path_format", None) or getattr(route, "path", None)


def security_context(scope) -> dict:
    """The per-request dict the audit middleware reads the principal from."""
    ctx = scope.get(SECURITY_SCOPE_KEY)
    if ctx is None:
        ctx = scope[SECURITY_SCOPE_KEY] = {}
    return ctx


def attribute(request: Request, tenant: str, subject: str, role: str = "trigger") -> Principal:
    """For a public route that authenticates its caller itself (an HMAC-signed hook
    trigger): name the tenant and subject the request acts for, so its audit entry has them."""
    principal = Principal(subject[:256], tenant, role, "attributed")
    request.state.principal = principal
    ctx = request.scope.get(SECURITY_SCOPE_KEY)
    if ctx is not None:
        ctx["principal"] = principal
    return principal


_unlisted_warned: set[tuple[str, str]] = set()


async def authorize(request: Request) -> Principal:
    """The one authorization dependency (installed on the app for every API route).
    Async: it runs on the event loop, without the thread hop a sync dependency costs;
    only a token checked against a JWKS URL (which may fetch keys) goes to a thread."""
    cached = getattr(request.state, "principal", None)
    if cached is not None:
        return cached
    method, path = request.method.upper(), route_template(request) or request.url.path
    rule = roles.rule_for(method, path)
    if rule is None:
        rule = roles.effective_rule(method, path)
        if (method, path) not in _unlisted_warned:
            _unlisted_warned.add((method, path))
            log.warning("route %s %s is not in api/roles.py PERMISSIONS: admin only", method, path)
    cfg = auth_config(request)
    limits = getattr(request.app.state, "api_limits", None)
    ip = take_pending_ip(request.scope)  # the address check RateLimitMiddleware left to us
    if rule.public:
        principal = PUBLIC_PRINCIPAL
        if limits is not None and ip is not None:
            await limits.check_async(ip, None)
    else:
        try:
            if cfg.jwks_url:  # checking the token may fetch the provider's keys
                principal = await anyio.to_thread.run_sync(authenticate, request, cfg)
            else:
                principal = authenticate(request, cfg)
        except ApiError:
            if limits is not None and ip is not None:
                await limits.check_async(ip, None)  # bad tokens count against the address
            raise
        if limits is not None:
            tenant = None if limits.exempt(request.scope, cfg.mode) else principal.tenant
            await limits.check_async(ip, tenant)  # both in one round trip
        if not principal.allows(rule.role):
            raise ApiError(403, f"forbidden: role {principal.role!r} cannot {method} {path} "
                                f"(needs {rule.role})")
    request.state.principal = principal
    ctx = request.scope.get(SECURITY_SCOPE_KEY)
    if ctx is not None:
        ctx["principal"] = principal
        ctx["rule"] = rule
    return principal
