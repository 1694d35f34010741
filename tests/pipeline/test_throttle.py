"""The throttle of wrong keys: a burst per address, then one per interval; addresses apart
(an IPv6 /64 as one); memory bounded."""

from __future__ import annotations

from tallygate.pipeline.throttle import FailureThrottle


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_an_address_is_throttled_after_its_burst_and_refills_at_the_rate() -> None:
    clock = Clock()
    throttle = FailureThrottle(burst=3, every_s=2.0, clock=clock)
    for _ in range(3):
        assert throttle.wait_s("203.0.113.1") == 0
        throttle.failed("203.0.113.1")
    assert throttle.wait_s("203.0.113.1") == 2.0
    assert throttle.wait_s("203.0.113.2") == 0  # another address is not affected
    clock.t += 1.0
    assert throttle.wait_s("203.0.113.1") == 1.0
    clock.t += 1.0
    assert throttle.wait_s("203.0.113.1") == 0  # one more try, then throttled again
    throttle.failed("203.0.113.1")
    assert throttle.wait_s("203.0.113.1") == 2.0


def test_ipv6_addresses_of_one_64_share_a_bucket() -> None:
    throttle = FailureThrottle(burst=2, every_s=1.0, clock=Clock())
    throttle.failed("2001:db8:1:2::1")
    throttle.failed("2001:db8:1:2:ffff::9")
    assert throttle.wait_s("2001:db8:1:2::77") > 0
    assert throttle.wait_s("2001:db8:1:3::1") == 0
    throttle.failed("::ffff:198.51.100.4")  # an IPv4-mapped address counts as the IPv4 address
    throttle.failed("198.51.100.4")
    assert throttle.wait_s("198.51.100.4") > 0


def test_memory_stays_bounded_by_dropping_refilled_buckets_first() -> None:
    clock = Clock()
    throttle = FailureThrottle(burst=2, every_s=1.0, clock=clock, max_addresses=100)
    for i in range(100):
        throttle.failed(f"10.0.0.{i}")
    clock.t += 10  # all refilled
    throttle.failed("10.0.1.1")
    throttle.failed("10.0.1.1")
    assert len(throttle) == 1 and throttle.wait_s("10.0.1.1") > 0


def test_a_refund_gives_back_a_failure_counted_ahead() -> None:
    throttle = FailureThrottle(burst=1, every_s=60.0, clock=Clock())
    throttle.failed("203.0.113.9")
    assert throttle.wait_s("203.0.113.9") > 0
    throttle.refund("203.0.113.9")
    assert throttle.wait_s("203.0.113.9") == 0
