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


def client_bucket(address: str) -> str:
    """The unit a per-client limit counts: an IPv4 address as it is, an IPv6 address by its /64
    (one subscriber's usual share), an IPv4-mapped IPv6 address as its IPv4 address."""
    if ":" not in address:
        return address
    try:
        ip = ipaddress.IPv6Address(address.partition("%")[0])
    except ValueError:
        return address
    if ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ipaddress.IPv6Network((ip, 64), strict=False))
