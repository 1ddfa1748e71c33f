"""The private-address guard and the hand-made redirect loop of sources/http.py."""

from __future__ import annotations

import ipaddress

import pytest

from agentflow.graph.errors import BlockedAddressError, ProviderError
from agentflow.graph.sources import http


@pytest.mark.parametrize("ip,reason", [
    ("127.0.0.1", "loopback"),
    ("127.8.9.10", "loopback"),
    ("::1", "loopback"),
    ("10.1.2.3", "private"),
    ("172.16.0.5", "private"),
    ("192.168.1.1", "private"),
    ("169.254.169.254", "link-local"),
    ("fe80::1", "link-local"),
    ("fd00::1", "private"),
    ("224.0.0.1", "multicast"),
    ("0.0.0.0", "unspecified"),
    ("::", "unspecified"),
    ("240.0.0.1", "reserved"),
    ("100.64.0.1", "non-public"),
    ("::ffff:127.0.0.1", "loopback (IPv4 inside IPv6)"),
    ("::ffff:169.254.169.254", "link-local (IPv4 inside IPv6)"),
    ("2002:7f00:1::", "loopback (IPv4 inside IPv6)"),  # 6to4 wrapping 127.0.0.1
])
def test_blocked_addresses(ip, reason):
    assert http.blocked_reason(ipaddress.ip_address(ip)) == reason


@pytest.mark.parametrize("ip", ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2001:4860:4860::8888",
                                "::ffff:8.8.8.8"])
def test_public_addresses_pass(ip):
    assert http.blocked_reason(ipaddress.ip_address(ip)) is None


def test_check_host_resolves_names():
    with pytest.raises(BlockedAddressError, match=r"localhost \((127\.0\.0\.1|::1)\): loopback"):
        http.check_host("localhost")
    with pytest.raises(BlockedAddressError, match="169.254.169.254: link-local"):
        http.check_host("169.254.169.254")
    with pytest.raises(BlockedAddressError):
        http.check_host("[::ffff:7f00:1]")
    assert http.check_host("8.8.8.8") == [ipaddress.ip_address("8.8.8.8")]


def test_guarded_send_never_connects_to_private(http_api):
    with pytest.raises(BlockedAddressError, match="API source 'x': refusing to connect to 127.0.0.1"):
        http.send("x", "GET", f"{http_api.url}/echo")
    assert http_api.call_count == 0


def test_allow_private_send_and_redirects(http_api):
    res = http.send("x", "GET", f"{http_api.url}/redirect?to=/orders/bob", allow_private=True)
    assert res.status == 200 and b"monitor" in res.content
    assert res.redirects == [f"{http_api.url}/orders/bob"]


def test_303_turns_post_into_get(http_api):
    res = http.send("x", "POST", f"{http_api.url}/redirect?to=/echo&status=303", allow_private=True,
                    json_body={"a": 1})
    assert b'"method": "GET"' in res.content


def test_307_keeps_method_and_body(http_api):
    res = http.send("x", "POST", f"{http_api.url}/redirect?to=/echo&status=307", allow_private=True,
                    json_body={"a": 1})
    assert b'"method": "POST"' in res.content and b'"json": {"a": 1}' in res.content


def test_at_most_five_redirects(http_api):
    assert http.send("x", "GET", f"{http_api.url}/redirect/5", allow_private=True).status == 200
    http_api.reset()
    with pytest.raises(ProviderError, match="more than 5 redirects"):
        http.send("x", "GET", f"{http_api.url}/redirect/6", allow_private=True)
    assert http_api.call_count == 6


def test_non_http_redirect_refused(http_api):
    with pytest.raises(Exception, match="refusing to follow a redirect to a 'file' URL"):
        http.send("x", "GET", f"{http_api.url}/redirect?to=file:///etc/passwd", allow_private=True)
