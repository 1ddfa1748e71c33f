"""Auth modes and keys: `local` (embedded default), `off`, `required` with HS256,
RS256 public key and JWKS; the local admin token; `agentflow token create`."""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from agentflow.settings import Settings

REMOTE = ("198.51.100.7", 40000)  # a client that is not this machine


def local_api(make_api, client_addr=None, **env):
    return make_api(client_addr, AGENTFLOW_AUTH="local", AGENTFLOW_JWT_SECRET=None, **env)


# ---------------------------------------------------------------- local mode


def test_defaults_local_when_embedded_required_when_distributed(monkeypatch):
    monkeypatch.delenv("AGENTFLOW_AUTH", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    assert Settings().auth_mode == "local"
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/0")
    assert Settings().auth_mode == "required"
    monkeypatch.setenv("AGENTFLOW_AUTH", "bogus")
    with pytest.raises(ValueError):
        Settings().auth_mode


def test_local_mode_this_machine_needs_no_token(make_api):
    api = local_api(make_api)
    me = api.client.get("/auth/me").json()
    assert me == {"subject": "local-admin", "tenant": "default", "role": "admin", "auth": "local"}
    assert api.client.get("/workflows").status_code == 200
    # a token is still checked when one is sent
    assert api.client.get("/workflows", headers={"Authorization": "Bearer nope"}).status_code == 401
    viewer = api.call("GET", "/auth/me", "acme", "viewer").json()
    assert viewer["tenant"] == "acme" and viewer["role"] == "viewer"


def test_local_mode_other_machines_need_a_token(make_api):
    api = local_api(make_api, REMOTE)
    assert api.client.get("/workflows").status_code == 401
    assert api.client.get("/auth/local-token").status_code == 403
    assert api.call("GET", "/workflows", "default", "viewer").status_code == 200
    assert api.client.get("/health").status_code == 200


@pytest.mark.parametrize("headers", [
    {"Origin": "https://evil.example"},           # a page of another site (CSRF)
    {"Origin": "null"},                           # a sandboxed frame or a file:// page
    {"Sec-Fetch-Site": "cross-site"},             # a no-cors request from another site
    {"Host": "evil.example:8000"},                # DNS rebinding: a foreign name resolving to us
])
def test_local_mode_browser_requests_from_other_sites_need_a_token(make_api, headers):
    api = local_api(make_api, ("127.0.0.1", 50000))
    assert api.client.get("/workflows", headers={"Host": "127.0.0.1:8000"}).status_code == 200
    assert api.client.post("/workflows", headers={"Host": "127.0.0.1:8000", **headers},
                           json={"id": "x"}).status_code == 401
    assert api.client.get("/auth/local-token", headers={"Host": "127.0.0.1:8000", **headers}).status_code == 403


def test_local_mode_studio_origins_on_this_machine_pass(make_api):
    api = local_api(make_api, ("127.0.0.1", 50000))
    for origin in ("http://127.0.0.1:8000", "http://localhost:3000", "http://[::1]:8000"):
        r = api.client.get("/workflows", headers={"Host": "localhost:8000", "Origin": origin,
                                                  "Sec-Fetch-Site": "same-site"})
        assert r.status_code == 200, origin


def test_local_token_is_private_stable_and_never_logged(make_api, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    api = local_api(make_api)
    home = api.settings.home
    token_file, secret_file = home / "local-admin.token", home / "jwt-secret"
    for path in (token_file, secret_file):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    answer = api.client.get("/auth/local-token")
    assert answer.status_code == 200 and answer.headers["cache-control"] == "no-store"
    token = answer.json()["token"]
    assert token == token_file.read_text().strip()
    me = api.client.get("/auth/me", headers={"Authorization": f"Bearer {token}"}).json()
    assert me == {"subject": "local-admin", "tenant": "default", "role": "admin", "auth": "token"}
    secret = secret_file.read_text().strip()
    logged = caplog.text
    assert token not in logged and secret not in logged
    assert str(token_file) in logged  # where it is, not what it is
    # a second start reuses the same secret and token
    again = make_api(AGENTFLOW_AUTH="local", AGENTFLOW_JWT_SECRET=None, AGENTFLOW_HOME=str(home))
    assert again.client.get("/auth/local-token").json()["token"] == token


def test_local_token_is_renewed_when_the_key_changes(make_api):
    api = local_api(make_api)
    home = api.settings.home
    old = (home / "local-admin.token").read_text().strip()
    (home / "jwt-secret").write_text("a-rotated-secret-0123456789abcdef")
    again = make_api(AGENTFLOW_AUTH="local", AGENTFLOW_JWT_SECRET=None, AGENTFLOW_HOME=str(home))
    new = again.client.get("/auth/local-token").json()["token"]
    assert new != old
    assert again.client.get("/auth/me", headers={"Authorization": f"Bearer {old}"}).status_code == 401
    assert again.client.get("/auth/me", headers={"Authorization": f"Bearer {new}"}).status_code == 200


def test_off_mode_lets_everyone_in_as_admin(make_api):
    api = make_api(REMOTE, AGENTFLOW_AUTH="off")
    assert api.client.get("/auth/me").json()["role"] == "admin"
    assert api.client.post("/workflows/validate", json={"id": 1}).status_code == 422


# ---------------------------------------------------------------- agentflow token create


def _cli(home, *args, **env):
    environ = {k: v for k, v in os.environ.items() if not k.startswith("AGENTFLOW_") and k not in ("REDIS_URL",)}
    environ.update(AGENTFLOW_HOME=str(home), **env)
    return subprocess.run([sys.executable, "-m", "agentflow.cli", "token", "create", *args],
                          capture_output=True, text=True, env=environ, timeout=60)


def test_cli_token_is_accepted_by_a_local_server_sharing_the_home(make_api, tmp_path):
    api = local_api(make_api, REMOTE)
    out = _cli(api.settings.home, "--tenant", "acme", "--role", "editor", "--ttl", "120", "--subject", "ci")
    assert out.returncode == 0, out.stderr
    token = out.stdout.strip()
    me = api.client.get("/auth/me", headers={"Authorization": f"Bearer {token}"}).json()
    assert me == {"subject": "ci", "tenant": "acme", "role": "editor", "auth": "token"}
    claims = jwt.decode(token, options={"verify_signature": False})
    assert 100 <= claims["exp"] - claims["iat"] <= 120
    assert out.stderr == ""


def test_cli_token_signed_with_the_configured_secret(make_api):
    api = make_api(REMOTE)  # required, AGENTFLOW_JWT_SECRET = conftest SECRET
    from tests.security.conftest import SECRET

    out = _cli(api.settings.home, "--tenant", "t1", "--role", "operator", AGENTFLOW_JWT_SECRET=SECRET)
    assert out.returncode == 0, out.stderr
    assert api.client.get("/auth/me", headers={"Authorization": f"Bearer {out.stdout.strip()}"}).json()["role"] == "operator"
    bad = _cli(api.settings.home, "--tenant", "t 1", AGENTFLOW_JWT_SECRET=SECRET)
    assert bad.returncode == 2 and "tenant must be" in bad.stderr
    bad = _cli(api.settings.home, "--role", "root")
    assert bad.returncode == 2


def test_cli_refuses_to_sign_when_an_identity_provider_holds_the_key(tmp_path):
    out = _cli(tmp_path, "--tenant", "acme", AGENTFLOW_AUTH="required",
               AGENTFLOW_JWKS_URL="https://idp.example.com/.well-known/jwks.json")
    assert out.returncode == 2 and "identity provider" in out.stderr


# ---------------------------------------------------------------- external identity provider (RS256)


@pytest.fixture(scope="module")
def rsa_key():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return key, public_pem


def _idp_token(key, kid="k1", **over):
    now = int(time.time())
    claims = {"sub": "alice@idp", "tenant": "acme", "role": "editor", "iat": now, "exp": now + 300,
              "iss": "https://idp.example.com", "aud": "agentflow", **over}
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid})


def test_rs256_public_key(make_api, rsa_key):
    key, public_pem = rsa_key
    api = make_api(AGENTFLOW_JWT_SECRET=None, AGENTFLOW_JWT_PUBLIC_KEY=public_pem.replace("\n", "\\n"),
                   AGENTFLOW_JWT_ISSUER="https://idp.example.com", AGENTFLOW_JWT_AUDIENCE="agentflow")
    ok = api.client.get("/auth/me", headers={"Authorization": f"Bearer {_idp_token(key)}"})
    assert ok.status_code == 200 and ok.json()["subject"] == "alice@idp"
    for bad in (_idp_token(key, aud="other"), _idp_token(key, iss="https://evil.example"),
                _idp_token(rsa.generate_private_key(public_exponent=65537, key_size=2048)),
                _idp_token(key, exp=int(time.time()) - 600), "x.y.z"):
        assert api.client.get("/auth/me", headers={"Authorization": f"Bearer {bad}"}).status_code == 401
    # no secret configured: nothing signed with HS256 is accepted, and no secret file appeared
    assert not (api.settings.home / "jwt-secret").exists()


def test_hs256_token_keyed_with_the_public_key_is_refused(make_api, rsa_key):
    """The classic algorithm-confusion attack."""
    import base64
    import hashlib
    import hmac as _hmac

    _, public_pem = rsa_key
    api = make_api(AGENTFLOW_JWT_SECRET=None, AGENTFLOW_JWT_PUBLIC_KEY=public_pem)

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).decode().rstrip("=")

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps({"sub": "x", "tenant": "acme", "role": "admin", "exp": int(time.time()) + 60}).encode())
    sig = b64(_hmac.new(public_pem.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest())
    r = api.client.get("/auth/me", headers={"Authorization": f"Bearer {head}.{body}.{sig}"})
    assert r.status_code == 401


class _JWKS(BaseHTTPRequestHandler):
    document: bytes = b""
    hits = 0

    def do_GET(self):  # noqa: N802
        type(self).hits += 1
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(self.document)

    def log_message(self, *args):
        pass


def test_jwks_url(make_api, rsa_key):
    key, _ = rsa_key
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    _JWKS.document = json.dumps({"keys": [{**jwk, "kid": "k1", "use": "sig", "alg": "RS256"}]}).encode()
    server = HTTPServer(("127.0.0.1", 0), _JWKS)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        api = make_api(AGENTFLOW_JWT_SECRET=None,
                       AGENTFLOW_JWKS_URL=f"http://127.0.0.1:{server.server_port}/jwks.json")
        for _ in range(3):
            r = api.client.get("/auth/me", headers={"Authorization": f"Bearer {_idp_token(key, iss=None, aud=None)}"})
            assert r.status_code == 200 and r.json()["role"] == "editor", r.text
        assert _JWKS.hits == 1  # keys are cached
        unknown = api.client.get("/auth/me", headers={"Authorization": f"Bearer {_idp_token(key, kid='k9')}"})
        assert unknown.status_code == 401
        roles = api.client.get("/auth/me", headers={
            "Authorization": f"Bearer {_idp_token(key, role=['viewer', 'operator', 'nonsense'])}"})
        assert roles.json()["role"] == "operator"  # a list of roles: the highest known one
    finally:
        server.shutdown()
