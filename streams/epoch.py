"""Noticing a new log epoch: the topic was recreated, or the embedded broker restarted.

Offsets only mean something within one incarnation of a topic. Real Kafka
keeps its logs, so a topic's id changes only when an operator deletes and
recreates the topic. The embedded broker keeps everything in memory: after a
restart every topic is new and empty and its offsets start at 0 again. A
consumer that kept its old positions would skip the new log's first records
(a fetch past the end may reset to 0, but only if it comes before the new
log has grown past the old position), and Faust drops records at or below
offsets it has already read. So every consumer watches its topic's id (the
epoch) and reads a new epoch from its beginning: the log followers seek back
in place (:class:`streams.log_follower.LogFollower`), the Faust worker exits
to be restarted fresh (:mod:`visearch.processes.worker`).

The tracker is also where a consumer says, once per outage, that the broker
is unreachable and that it is back: kafka-python and aiokafka retry quietly
or with a stream of connection warnings, neither of which tells an operator
what is going on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

log = logging.getLogger(__name__)

# EX_TEMPFAIL, "try again": a process that must start over in a new log epoch
# exits with it (the embedding worker), and its supervisor starts it again.
EXIT_NEW_EPOCH = 75


class EpochTracker:
    """The known epoch of one topic, checked on demand; outages are logged once.

    ``read_epoch(timeout_s)`` is :func:`streams.topics.topic_epoch` bound to
    the cluster and topic (the caller knows how to connect); ``where`` names
    them in log lines.
    """

    def __init__(
        self,
        read_epoch: Callable[[float], str],
        where: str,
        epoch: str,
        owner: str,
        timeout_s: float = 1.0,
    ) -> None:
        self.read_epoch = read_epoch
        self.where = where
        self.epoch = epoch
        self.owner = owner
        self.timeout_s = timeout_s
        # What stops the check right now: "unreachable", "missing", None (it worked).
        self.problem: str | None = None

    def check(self) -> str | None:
        """Read the topic's epoch; returns it if it is new (and adopts it), else None."""
        try:
            epoch = self.read_epoch(self.timeout_s)
        except Exception as exc:  # any client error here means "cannot tell yet"
            self._report("unreachable", f"broker unreachable for {self.where} ({exc})")
            return None
        if not epoch:  # a restarted broker before the topics are created again
            self._report("missing", f"{self.where} does not exist")
            return None
        self._report(None, "")
        if epoch == self.epoch:
            return None
        log.warning(
            "%s: %s is a new log epoch (topic id %s, was %s): the broker restarted or the "
            "topic was recreated; reading the new log from its start",
            self.owner,
            self.where,
            epoch,
            self.epoch,
        )
        self.epoch = epoch
        return epoch

    def _report(self, problem: str | None, detail: str) -> None:
        """Log a change of condition, not every failed check."""
        if problem == self.problem:
            return
        if problem is not None:
            log.warning("%s: %s; waiting for it", self.owner, detail)
        else:
            log.warning("%s: %s is reachable again", self.owner, self.where)
        self.problem = problem
