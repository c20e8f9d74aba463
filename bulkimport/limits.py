"""The portal's limits as the client plans for them (reference §3).

The plan's ETA and the sender's governor read the same :class:`PortalLimits`, so the estimate and
the pace can't disagree. All figures are in portal seconds; compressed-time tests change the clock,
not these numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

#: Server-side operating time of one imconnector.send.messages message, assumed until measured.
#: The documentation's single-message example reports ~1.2 s; the sender replaces this with the
#: figure it measures from ``time.operating`` of real answers.
ASSUMED_SECONDS_PER_MESSAGE = 1.2


@dataclass(frozen=True)
class PortalLimits:
    """One plan's limits: leaky bucket (X, Y), per-method operating budget and request cap."""

    name: str = "standard"
    bucket_size: int = 50  # X: requests the bucket holds before 503 QUERY_LIMIT_EXCEEDED
    drain_rate: float = 2.0  # Y: requests drained per second
    operating_limit: float = 480.0  # seconds of server time per method per window → 429 beyond
    operating_window: float = 600.0  # ten one-minute baskets
    request_timeout: float = 60.0  # the portal cuts off longer requests
    batch_max: int = 50  # commands per batch
    # Share of the operating budget the sender lets itself use per window (it waits for the reset
    # beyond it, so one slow call cannot tip it into 429); the plan's ETA uses the same figure.
    budget_safety: float = 0.98

    @property
    def operating_rate(self) -> float:
        """Sustained server seconds per second one method may use (0.8 on the cloud plans)."""
        return self.operating_limit / self.operating_window

    def with_(self, **changes: float | int | str) -> PortalLimits:
        """A copy with some figures overridden (``STANDARD.with_(drain_rate=1)``)."""
        return replace(self, **changes)  # type: ignore[arg-type]


STANDARD = PortalLimits("standard", 50, 2.0)
ENTERPRISE = PortalLimits("enterprise", 250, 5.0)
PRESETS: dict[str, PortalLimits] = {"standard": STANDARD, "enterprise": ENTERPRISE}


def preset(name: str) -> PortalLimits:
    """The preset called ``name`` (``standard`` or ``enterprise``)."""
    try:
        return PRESETS[name.lower()]
    except KeyError:
        from .errors import ConfigError

        raise ConfigError(f"--plan {name!r} is not a known plan; use one of: {', '.join(PRESETS)}") from None
