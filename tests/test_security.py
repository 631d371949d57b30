"""Security defaults: who may query by default, and what the socket files allow."""

from __future__ import annotations

import pytest

from triodist.rules.matchers import NetmaskGroup
from triodist.server import DEFAULT_ACL, ServerConfig


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("127.0.0.1", True),
        ("10.1.2.3", True),
        ("172.16.0.1", True),
        ("192.168.1.1", True),
        ("100.64.0.1", True),
        ("169.254.1.1", True),
        ("::1", True),
        ("fd00::1", True),
        ("fe80::1", True),
        ("8.8.8.8", False),
        ("192.0.2.1", False),
        ("172.32.0.1", False),
        ("2001:db8::1", False),
        ("::ffff:8.8.8.8", False),
    ],
)
def test_the_default_acl_is_private_ranges_only(address: str, allowed: bool) -> None:
    # As dnsdist: without setACL/addACL, only loopback and private networks may query.
    acl = ServerConfig().acl
    assert isinstance(acl, NetmaskGroup)
    assert acl.match(address) is allowed
    assert set(DEFAULT_ACL) >= {"127.0.0.0/8", "10.0.0.0/8", "192.168.0.0/16", "::1/128"}
