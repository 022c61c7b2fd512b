"""The server's ICE host candidates on UDP ports from a fixed range (``server.udp_port_range``).

A firewall or a security group that opens only a UDP range (EC2, a VM, ``docker run -p``) needs the
server to take its ports from that range; aiortc and aioice always bind an ephemeral port and have no
option for it. ``pin_udp_ports`` is called on a peer connection after its remote description (which
creates its ICE agents) and before its local description (which gathers their candidates): each agent
then binds its host sockets to the first free port of the range, one per host address. Server-reflexive
(STUN) and relayed (TURN) candidates are gathered as aioice does. Where no port is free, that address
gets no host candidate and a warning says so.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import socket
from collections.abc import Sequence

from aioice import Candidate, Connection
from aioice.candidate import candidate_foundation, candidate_priority
from aioice.ice import StunProtocol, server_reflexive_candidate
from aioice.turn import UDP_SOCKET_BUFFER_SIZE
from aiortc import RTCPeerConnection

from agent.transport.ice import ice_connections

log = logging.getLogger(__name__)


def pin_udp_ports(pc: RTCPeerConnection, port_range: Sequence[int]) -> None:
    """Make ``pc``'s ICE agents gather host candidates on ports in ``[min, max]``; empty: leave them be."""
    if not port_range:
        return
    low, high = port_range
    for connection in ice_connections(pc):
        # Connection.gather_candidates() calls this once per component; an instance attribute wins.
        connection.get_component_candidates = functools.partial(_component_candidates, connection, (low, high))


def bind_in_range(address: str, low: int, high: int) -> socket.socket | None:
    """A non-blocking UDP socket on ``address`` at the first free port in ``[low, high]``, or None."""
    family = socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET
    for port in range(low, high + 1):
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.bind((address, port))
        except OSError:
            sock.close()
            continue
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_SOCKET_BUFFER_SIZE)
        return sock
    return None


async def _component_candidates(
    connection: Connection, ports: tuple[int, int], component: int, addresses: list[str], timeout: int = 5
) -> list[Candidate]:
    loop = asyncio.get_running_loop()
    hosts: list[StunProtocol] = []
    for address in addresses:
        sock = bind_in_range(address, *ports)
        if sock is None:
            log.warning(
                "no free UDP port in %d-%d on %s (server.udp_port_range): no host candidate there", *ports, address
            )
            continue
        _, protocol = await loop.create_datagram_endpoint(lambda: StunProtocol(connection), sock=sock)
        host, port = sock.getsockname()[:2]
        protocol.local_candidate = Candidate(
            foundation=candidate_foundation("host", "udp", host),
            component=component,
            transport="udp",
            priority=candidate_priority(component, "host"),
            host=host,
            port=port,
            type="host",
        )
        hosts.append(protocol)
    # The agent pairs remote candidates with the sockets it holds here, as for the ones it binds itself.
    connection._protocols += hosts

    # TURN as aioice does it: its own step, given no host address to bind.
    relayed = asyncio.ensure_future(
        Connection.get_component_candidates(connection, component=component, addresses=[], timeout=timeout)
    )
    reflexive: list[Candidate] = []
    if connection.stun_server is not None:
        queries = [
            asyncio.ensure_future(server_reflexive_candidate(protocol, connection.stun_server))
            for protocol in hosts
            if ipaddress.ip_address(protocol.local_candidate.host).version == 4
        ]
        if queries:
            done, pending = await asyncio.wait(queries, timeout=timeout)
            for task in pending:
                task.cancel()
            reflexive = [task.result()[0] for task in done if task.exception() is None]
    return [*(p.local_candidate for p in hosts), *reflexive, *await relayed]
