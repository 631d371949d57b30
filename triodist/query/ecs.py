"""EDNS Client Subnet in a query's life: which queries get the option, giving it to them
on their way to a backend, and taking it back out of the backend's answer.

dnsdist's order, which the pipeline follows for a query that may get ECS (its pool
has a server with ``useClientSubnet``, or ``setECS(true)``, and no rule disabled it):

1. the pool's policy chooses the server first (the choice says whether ECS is added:
   that server's ``useClientSubnet``, or with no server the pool's ``setECS``);
2. the zero-scope lookup: with a cache that parses ECS (``parseECS``), and a server
   without ``disableZeroScope``, the query is looked up as the client sent it. A hit is
   an answer a backend said was good for every client (scope 0). A query that carried no
   ECS of its own remembers that key: its answer, if its scope is zero, is filed there;
3. the option is added (``add_client_subnet``) and the query is looked up again, now
   with its subnet in the key, then sent;
4. the answer loses what was added (``restore_answer``) before it is cached and sent.

Imports nothing above triodist.query (the wire format below it).
"""

from __future__ import annotations

from triodist.wire.ecs import ECSState, add_to_query, network_value, option_value
from triodist.wire.ecs import restore_answer as _restore_answer
from triodist.wire.edns import EDNSError
from triodist.wire.message import DNSQuestion

#: What a query may grow to when the option is added (dnsdist's buffers): over UDP
#: 4096 bytes, over TCP the largest DNS message.
MAX_UDP_QUERY = 4096
MAX_TCP_QUERY = 65535


def ecs_state(dq: DNSQuestion) -> ECSState:
    """The query's ECS state, made on first use."""
    state = dq.ecs
    if state is None:
        state = dq.ecs = ECSState()
    assert isinstance(state, ECSState)
    return state


def add_client_subnet(dq: DNSQuestion) -> bool:
    """Give the query its client subnet: a rule's (``SetECSAction``), else the client's
    address cut to ``dq.ecsPrefixLength`` bits; an existing option replaced only with
    ``dq.ecsOverride``. False when it could not be added (the records cannot be walked,
    or the query would grow too large): dnsdist drops such a query."""
    state = ecs_state(dq)
    if state.subnet is not None:
        value = network_value(state.subnet)
    else:
        try:
            value = option_value(dq.remote[0], dq.ecsPrefixLength)
        except ValueError:
            return False  # a remote that is not an address (a replay's): nothing to send
    try:
        state.edns_added, state.ecs_added = add_to_query(
            dq.data,
            value,
            override=bool(dq.ecsOverride),
            max_size=MAX_TCP_QUERY if dq.tcp else MAX_UDP_QUERY,
        )
    except EDNSError:
        return False
    return True


def restore_answer(answer: bytearray, state: ECSState) -> bool | None:
    """Take what was added to the query out of its answer: True when the answer is good
    for every client (its ECS scope was zero) and may be filed under the query's key
    without ECS; False otherwise; None when the answer cannot be walked (dnsdist fails
    on it: it is dropped)."""
    try:
        zero_scope = _restore_answer(answer, state)
    except EDNSError:
        return None
    return zero_scope and state.key_no_ecs is not None
