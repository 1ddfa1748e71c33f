"""HTTP calls for api nodes, with a guard against reaching private addresses (SSRF).

The guard runs where the socket is opened: a network backend resolves the host,
refuses the connection if *any* address is loopback, private, link-local, reserved,
multicast or unspecified (IPv4-mapped IPv6 included), and connects to the address it
checked, so a DNS answer cannot change between the check and the connect. Redirects
are followed by hand (at most 5), and each hop goes through the same guard.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from dataclasses import dataclass, field
from typing import Any

import httpcore
import httpx

from ..errors import BlockedAddressError, ProviderError, StepError
from ..secrets import redact

MAX_REDIRECTS = 5
MAX_BODY_BYTES = 10 * 1024 * 1024

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def blocked_reason(ip: IPAddress) -> str | None:
    """Why connecting to `ip` is refused, or None when it is a public address."""
    if isinstance(ip, ipaddress.IPv6Address):
        mapped = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if mapped is not None:
            reason = blocked_reason(mapped)
            return f"{reason} (IPv4 inside IPv6)" if reason else None
    for attr, reason in (("is_unspecified", "unspecified"), ("is_loopback", "loopback"),
                         ("is_link_local", "link-local"), ("is_multicast", "multicast"),
                         ("is_reserved", "reserved"), ("is_private", "private")):
        if getattr(ip, attr):
            return reason
    if not ip.is_global:  # e.g. 100.64.0.0/10 carrier-grade NAT
        return "non-public"
    return None


def resolve(host: str, port: int | None = None) -> list[IPAddress]:
    host = host.strip("[]")
    try:
        return [ipaddress.ip_address(host.split("%", 1)[0])]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port or 0, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ProviderError(f"could not resolve host {host!r}: {exc.strerror}", retryable=True) from None
    except (UnicodeError, ValueError) as exc:  # not encodable as a DNS name (IDNA), NUL bytes ...
        raise ProviderError(f"{host!r} is not a valid host name: {exc}", retryable=False) from None
    seen: list[IPAddress] = []
    for info in infos:
        ip = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if ip not in seen:
            seen.append(ip)
    return seen


def check_host(host: str, port: int | None = None) -> list[IPAddress]:
    """Resolve `host` and raise BlockedAddressError unless every address is public."""
    ips = resolve(host, port)
    for ip in ips:
        reason = blocked_reason(ip)
        if reason:
            shown = host if host.strip("[]") == str(ip) else f"{host} ({ip})"
            raise BlockedAddressError(
                f"refusing to connect to {shown}: {reason} address; set allow_private on the "
                "source to allow it")
    return ips


class _GuardedBackend(httpcore.NetworkBackend):
    """httpcore network backend that vets every TCP connect and pins the vetted IP."""

    def __init__(self) -> None:
        self._inner = httpcore.SyncBackend()

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        last: Exception | None = None
        for ip in check_host(host, port):
            try:
                return self._inner.connect_tcp(str(ip), port, timeout, local_address, socket_options)
            except httpcore.ConnectError as exc:  # try the next vetted address
                last = exc
        raise last or httpcore.ConnectError(f"no address for {host}")

    def connect_unix_socket(self, path, timeout=None, socket_options=None):
        raise BlockedAddressError("unix sockets are not allowed")

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class GuardedTransport(httpx.HTTPTransport):
    def __init__(self) -> None:
        super().__init__(trust_env=False)
        # Swap in a pool using our backend (httpx keeps its pool in `_pool`).
        self._pool = httpcore.ConnectionPool(ssl_context=httpx.create_ssl_context(),
                                             network_backend=_GuardedBackend())


_clients: dict[bool, httpx.Client] = {}
_clients_lock = threading.Lock()


def client(allow_private: bool) -> httpx.Client:
    with _clients_lock:
        c = _clients.get(allow_private)
        if c is None:
            # trust_env=False: an environment proxy would bypass the address guard.
            transport = httpx.HTTPTransport(trust_env=False) if allow_private else GuardedTransport()
            c = _clients[allow_private] = httpx.Client(transport=transport, follow_redirects=False,
                                                       trust_env=False)
        return c


@dataclass
class HTTPResult:
    status: int
    headers: httpx.Headers
    content: bytes
    url: str
    redirects: list[str] = field(default_factory=list)


def _origin(url: httpx.URL) -> tuple:
    return url.scheme, url.host, url.port


def send(source_id: str, method: str, url: str, *, allow_private: bool = False,
         params: dict | None = None, headers: dict | None = None, json_body: Any = None,
         timeout: float = 10.0, secret_headers: dict | None = None) -> HTTPResult:
    """One request, redirects followed by hand. `secret_headers` (auth) are dropped when
    a redirect leaves the original origin, so a credential never follows to another host."""
    http = client(allow_private)
    label = f"API source '{source_id}'"
    first = httpx.URL(url)
    if params:  # (httpx.URL(url, params=None) would drop the URL's own query)
        first = first.copy_merge_params(params)
    origin = _origin(first)
    current, body, redirects = first, json_body, []
    for _hop in range(MAX_REDIRECTS + 1):
        if current.scheme not in ("http", "https"):
            raise StepError(f"{label}: refusing to follow a redirect to a {current.scheme!r} URL")
        hdrs = dict(headers or {})
        if secret_headers and _origin(current) == origin:
            hdrs.update(secret_headers)
        try:
            req = http.build_request(method, current, headers=hdrs,
                                     json=body,
                                     timeout=httpx.Timeout(timeout))
            resp = http.send(req, stream=True)
        except BlockedAddressError as exc:
            where = " after a redirect" if redirects else ""
            raise BlockedAddressError(f"{label}{where}: {exc}") from None
        except httpx.TimeoutException:
            raise ProviderError(f"{label} did not answer within {timeout:g} s", retryable=True) from None
        except httpx.TransportError as exc:
            raise ProviderError(redact(f"could not connect to {label}: {exc or type(exc).__name__}"),
                                retryable=True) from None
        try:
            if resp.has_redirect_location:
                nxt = current.join(resp.headers["location"])
                redirects.append(str(nxt))
                if resp.status_code == 303 or (resp.status_code in (301, 302) and method == "POST"):
                    method, body = "GET", None
                current = nxt
                continue
            content = _read_capped(resp, label)
            return HTTPResult(resp.status_code, resp.headers, content, str(current), redirects)
        except httpx.TimeoutException:
            raise ProviderError(f"{label} did not finish its answer within {timeout:g} s",
                                retryable=True) from None
        except httpx.TransportError as exc:
            raise ProviderError(redact(f"{label} broke off its answer: {exc or type(exc).__name__}"),
                                retryable=True) from None
        finally:
            resp.close()
    raise ProviderError(f"{label}: more than {MAX_REDIRECTS} redirects", retryable=False)


def _read_capped(resp: httpx.Response, label: str) -> bytes:
    chunks, size = [], 0
    for chunk in resp.iter_bytes():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise ProviderError(f"{label} answered with more than {MAX_BODY_BYTES // (1024 * 1024)} MB",
                                retryable=False)
        chunks.append(chunk)
    return b"".join(chunks)
