"""Which IP addresses count as public: where a webhook may send by default.

Loopback, private (RFC 1918, unique-local), link-local (where cloud metadata services live,
169.254.169.254 and fd00:ec2::254 among them), shared (100.64.0.0/10, Alibaba's metadata),
multicast, unspecified and reserved ranges are not public; an IPv4 address mapped into IPv6 is
judged as the IPv4 address it carries.
"""

from __future__ import annotations

import ipaddress


def is_ip(host: str) -> bool:
    """Whether `host` is an IP address literal (not a name to resolve)."""
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def is_public(address: str) -> bool:
    """Whether `address` (an IPv4 or IPv6 literal, brackets and zone allowed) is globally routable."""
    try:
        ip = ipaddress.ip_address(address.strip("[]").partition("%")[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast
