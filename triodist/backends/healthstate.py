"""The health-check settings and state a backend carries, and what a check needs of it.

``HealthCheckConfig`` is what ``newServer``'s options say about checks; the enums are the
states dnsdist names (the administrative ``mode``, the check mode, the lazy mode's states
and what it counts as a failure); ``CheckedServer`` is what the checker (``health.py``)
reads and changes on a backend, so that it depends on this, not on ``Server``.
``server.py`` and ``health.py`` both import this module; it imports nothing above
``triodist.wire``.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import dns.exception
import dns.name
import dns.rdataclass
import dns.rdatatype

from triodist.wire.address import ComboAddress
from triodist.wire.names import as_name

DEFAULT_CHECK_NAME = dns.name.from_text("a.root-servers.net.")


class Availability(enum.StrEnum):
    """A server's administrative state (dnsdist's): following the health checks, or
    forced up or down (``healthCheckMode``, ``setUp``/``setDown``/``setAuto``)."""

    AUTO = "auto"
    UP = "up"
    DOWN = "down"


class CheckMode(enum.StrEnum):
    """How an ``auto`` server is checked: a check every ``checkInterval`` (active), or
    only once its real queries fail (lazy); ``getHealthCheckMode()`` shows it."""

    ACTIVE = "active"
    LAZY = "lazy"


class LazyStatus(enum.StrEnum):
    """The lazy health check's states, by dnsdist's names."""

    HEALTHY = "Healthy"
    POTENTIAL_FAILURE = "PotentialFailure"
    FAILED = "Failed"


class LazyMode(enum.StrEnum):
    """What the lazy health check counts as a failed query (``lazyHealthCheckMode``)."""

    TIMEOUT_ONLY = "TimeoutOnly"
    TIMEOUT_OR_SERVFAIL = "TimeoutOrServFail"


# What ``healthCheckMode`` accepts (case-insensitively): (availability, check mode).
_HEALTH_CHECK_MODES = {
    "auto": (Availability.AUTO, CheckMode.ACTIVE),
    "lazy": (Availability.AUTO, CheckMode.LAZY),
    "up": (Availability.UP, CheckMode.ACTIVE),
    "down": (Availability.DOWN, CheckMode.ACTIVE),
}
_LAZY_MODES = {mode.lower(): mode for mode in LazyMode}


# --- settings ------------------------------------------------------------------------------


@dataclass
class HealthCheckConfig:
    """The health-check settings of one server (``newServer``'s options), in seconds."""

    check_name: dns.name.Name = DEFAULT_CHECK_NAME
    check_type: int = int(dns.rdatatype.A)
    check_class: int = int(dns.rdataclass.IN)
    check_interval: float = 1.0
    check_timeout: float = 1.0
    max_check_failures: int = 1
    rise: int = 1
    must_resolve: bool = False
    set_cd: bool = False
    check_tcp: bool = False
    # checkFunction(qname, qtype, qclass, dh) -> qname, qtype, qclass (a Lua function).
    check_function: Callable[..., Any] | None = None
    lazy_failed_interval: float = 30.0
    lazy_mode: LazyMode = LazyMode.TIMEOUT_OR_SERVFAIL
    lazy_sample_size: int = 100
    lazy_min_sample_count: int = 1
    lazy_threshold: float = 20.0
    lazy_exponential_backoff: bool = False
    lazy_max_backoff: float = 3600.0

    @classmethod
    def from_options(
        cls, opts: Mapping[str, Any]
    ) -> tuple[Availability, CheckMode, HealthCheckConfig]:
        """Read ``newServer``'s health-check options: (availability, check mode, settings).

        Raises ``ValueError`` naming the option and what it accepts; the
        configuration layer turns it into a configuration error.
        """
        config = cls()
        availability, check_mode = Availability.AUTO, CheckMode.ACTIVE
        if "healthCheckMode" in opts:
            text = _string(opts["healthCheckMode"], "healthCheckMode")
            modes = _HEALTH_CHECK_MODES.get(text.lower())
            if modes is None:
                raise ValueError(
                    f"'healthCheckMode' must be 'auto', 'lazy', 'up' or 'down', got '{text}'"
                )
            availability, check_mode = modes
        if "checkName" in opts:
            value = opts["checkName"]
            try:
                config.check_name = as_name(value).derelativize(dns.name.root)
            except (TypeError, ValueError, dns.exception.DNSException) as exc:
                raise ValueError(f"'checkName' is not a valid DNS name: {value!r}") from exc
        if "checkType" in opts:
            config.check_type = _rr_code(opts["checkType"], "checkType", dns.rdatatype.from_text)
        if "checkClass" in opts:
            config.check_class = _rr_code(
                opts["checkClass"], "checkClass", dns.rdataclass.from_text
            )
        if "checkInterval" in opts:
            config.check_interval = _number(opts["checkInterval"], "checkInterval", minimum=0)
        if "checkTimeout" in opts:
            # Milliseconds in the configuration, as in dnsdist.
            config.check_timeout = _number(opts["checkTimeout"], "checkTimeout", minimum=0) / 1000
        if "maxCheckFailures" in opts:
            config.max_check_failures = _integer(opts["maxCheckFailures"], "maxCheckFailures", 1)
        if "rise" in opts:
            config.rise = _integer(opts["rise"], "rise", 1)
        for key, attr in (
            ("mustResolve", "must_resolve"),
            ("setCD", "set_cd"),
            ("checkTCP", "check_tcp"),
            ("lazyHealthCheckUseExponentialBackOff", "lazy_exponential_backoff"),
        ):
            if key in opts:
                setattr(config, attr, _boolean(opts[key], key))
        if "checkFunction" in opts:
            func = opts["checkFunction"]
            if not callable(func) or isinstance(func, str | bytes):
                raise ValueError(f"'checkFunction' must be a function, got {_show(func)}")
            config.check_function = func
        if "lazyHealthCheckMode" in opts:
            text = _string(opts["lazyHealthCheckMode"], "lazyHealthCheckMode")
            mode = _LAZY_MODES.get(text.lower())
            if mode is None:
                raise ValueError(
                    "'lazyHealthCheckMode' must be 'TimeoutOnly' or 'TimeoutOrServFail', "
                    f"got '{text}'"
                )
            config.lazy_mode = mode
        if "lazyHealthCheckFailedInterval" in opts:
            config.lazy_failed_interval = _number(
                opts["lazyHealthCheckFailedInterval"], "lazyHealthCheckFailedInterval", minimum=0
            )
        if "lazyHealthCheckSampleSize" in opts:
            config.lazy_sample_size = _integer(
                opts["lazyHealthCheckSampleSize"], "lazyHealthCheckSampleSize", 1
            )
        if "lazyHealthCheckMinSampleCount" in opts:
            config.lazy_min_sample_count = _integer(
                opts["lazyHealthCheckMinSampleCount"], "lazyHealthCheckMinSampleCount", 1
            )
        if "lazyHealthCheckThreshold" in opts:
            threshold = _number(opts["lazyHealthCheckThreshold"], "lazyHealthCheckThreshold")
            if not 0 <= threshold <= 100:
                raise ValueError(
                    f"'lazyHealthCheckThreshold' is a percentage (0 to 100), got {_show(threshold)}"
                )
            config.lazy_threshold = threshold
        if "lazyHealthCheckMaxBackOff" in opts:
            config.lazy_max_backoff = _number(
                opts["lazyHealthCheckMaxBackOff"], "lazyHealthCheckMaxBackOff", minimum=0
            )
        return availability, check_mode, config


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, str | int | float):
        return repr(value)
    return type(value).__name__


def _string(value: Any, key: str) -> str:
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    if not isinstance(value, str):
        raise ValueError(f"'{key}' must be a string, got {_show(value)}")
    return value


def _boolean(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"'{key}' must be true or false, got {_show(value)}")
    return value


def _number(value: Any, key: str, *, minimum: float | None = None) -> float:
    """A number (or a numeric string, as dnsdist reads several of these as text)."""
    if isinstance(value, bool):
        raise ValueError(f"'{key}' must be a number, got {_show(value)}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"'{key}' must be a number, got {_show(value)}") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise ValueError(f"'{key}' must be a finite number, got {_show(value)}")
    if minimum is not None and number <= minimum:
        raise ValueError(f"'{key}' must be greater than {_show(minimum)}, got {_show(value)}")
    return number


def _integer(value: Any, key: str, minimum: int) -> int:
    number = _number(value, key)
    if not number.is_integer() or number < minimum:
        raise ValueError(f"'{key}' must be a whole number >= {minimum}, got {_show(value)}")
    return int(number)


def _rr_code(value: Any, key: str, from_text: Callable[[str], int]) -> int:
    """A record type or class: its mnemonic ("AAAA", "CH", "TYPE65") or its number."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if float(value).is_integer() and 0 <= value <= 0xFFFF:
            return int(value)
        raise ValueError(f"'{key}' must be between 0 and 65535, got {_show(value)}")
    text = _string(value, key)
    if text.isdigit() and int(text) <= 0xFFFF:
        return int(text)
    try:
        return int(from_text(text))
    except (ValueError, dns.exception.DNSException):
        raise ValueError(f"'{key}': unknown value '{text}'") from None


def new_lazy_results(config: HealthCheckConfig) -> deque[bool]:
    """The window of recent query outcomes (``True``: failed) of a lazy server."""
    return deque(maxlen=config.lazy_sample_size)


# --- what the checker needs of a server -------------------------------------------------------


class CheckedServer(Protocol):
    """What the health checks read and change on a backend (``Server`` has it all): where
    to send a check, the settings, and the state they fold their results into."""

    address: ComboAddress
    tcp_only: bool
    mode: Availability
    health_check_mode: CheckMode
    health: HealthCheckConfig
    #: What the checks concluded (``mode`` aside), and their counts.
    healthy: bool
    check_failures: int
    check_successes: int
    health_check_failures: int
    health_check_latency_us: float
    #: The first line of the ``checkFunction``'s last error, logged once per distinct one.
    check_function_error: str | None
    #: The lazy mode's state, the time of its next check, and its window of outcomes.
    lazy_status: LazyStatus
    lazy_next_check: float
    lazy_results: deque[bool] | None

    def getNameWithAddr(self) -> str: ...
