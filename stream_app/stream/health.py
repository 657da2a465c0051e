"""Liveness and readiness of a worker (what /healthz and /ready answer; stream/web.py serves them).

Liveness: the event loop answers a request (a blocked loop stops the agents, the commits and the web server
alike). Readiness: the consumer is in the group with its partitions assigned (Faust's partitions-assigned
callback came after the last revocation; an assignment of no partition counts, since a group can have more
workers than partitions) and no input partition has had its committed offset stay put for
RECSYS_READY_STALL_TIMEOUT s while events wait past it (stream/lag.py samples that).
"""

from __future__ import annotations

import time

from stream_app.stream.lag import LagMonitor


class Readiness:
    def __init__(self, lag: LagMonitor, stall_timeout: float, metrics=None, clock=time.monotonic):
        self.lag, self.stall_timeout, self.metrics, self.clock = lag, float(stall_timeout), metrics, clock
        self.assigned = False
        self.partitions = 0  # input partitions assigned now

    def on_assigned(self, partitions: int) -> None:
        self.assigned, self.partitions = True, int(partitions)
        self.refresh()

    def on_revoked(self) -> None:
        self.assigned, self.partitions = False, 0
        self.refresh()

    def check(self) -> tuple[bool, str]:
        """(ready, why) now."""
        if not self.assigned:
            return False, "not ready: no partition assignment (starting, or a rebalance is in progress)"
        if self.stall_timeout > 0:
            stalled = self.lag.stalled(self.clock(), self.stall_timeout)
            if stalled:
                tp, seconds = stalled[0]
                return False, (f"not ready: {len(stalled)} input partition(s) stalled; {tp.topic}[{tp.partition}] "
                               f"has had {self.lag.lag.get(tp, 0)} event(s) waiting past its committed offset for "
                               f"{seconds:.0f} s")
        return True, f"ready: {self.partitions} input partition(s) assigned"

    def refresh(self) -> tuple[bool, str]:
        """check(), also exported as recsys_ready."""
        ready, why = self.check()
        if self.metrics is not None:
            self.metrics.ready.set(1 if ready else 0)
        return ready, why
