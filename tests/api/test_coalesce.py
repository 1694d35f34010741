"""A response's writes of one loop turn reach the socket as one send; close sends what waits."""

from __future__ import annotations

import asyncio
import socket

from tallygate.api.coalesce import CoalescingTransport


class _Recorder(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None


async def _pair() -> tuple[CoalescingTransport, socket.socket, asyncio.Transport]:
    loop = asyncio.get_running_loop()
    ours, theirs = socket.socketpair()
    theirs.setblocking(False)
    transport, _ = await loop.create_connection(_Recorder, sock=ours)
    return CoalescingTransport(transport, loop), theirs, transport


def test_writes_of_one_turn_leave_in_one_send_and_in_order() -> None:
    async def scenario() -> list[bytes]:
        coalescing, peer, transport = await _pair()
        sends: list[bytes] = []
        real_write = transport.write

        def counting_write(data: bytes) -> None:  # what the wrapper hands the real transport
            sends.append(bytes(data))
            real_write(data)

        transport.write = counting_write  # type: ignore[method-assign]
        coalescing.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
        coalescing.write(b"{}")
        assert sends == []  # nothing yet: it goes at the end of the turn
        await asyncio.sleep(0)
        coalescing.write(b"next")
        await asyncio.sleep(0)
        received = peer.recv(1024)
        coalescing.close()
        peer.close()
        assert received == b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}next"
        return sends

    sends = asyncio.run(scenario())
    assert sends == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}", b"next"]


def test_close_sends_what_is_pending_first() -> None:
    async def scenario() -> bytes:
        coalescing, peer, _ = await _pair()
        coalescing.write(b"HTTP/1.1 408 Request Timeout\r\n\r\n")
        coalescing.close()
        await asyncio.sleep(0.05)
        peer.setblocking(True)
        peer.settimeout(2)
        data = b""
        while chunk := peer.recv(1024):
            data += chunk
        peer.close()
        return data

    assert asyncio.run(scenario()) == b"HTTP/1.1 408 Request Timeout\r\n\r\n"
