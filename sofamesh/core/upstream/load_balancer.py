"""Load balancer contract. Implementations are plugins (``round_robin``, ``random``,
``least_request``, ``ring_hash``, ``maglev``).

A balancer chooses among the endpoints its cluster hands it: the healthy endpoints of the priority
(and locality) the cluster picked, or all of them in panic. Priorities, localities and health are
the cluster's business (``core/upstream/host_set.py``), not the balancer's.

A balancer that balances on a request's hash (ring hash, Maglev) says so with ``needs_hash``: only
then does the stream compute the hash from the route's ``hash_policy``, and only then is ``choose``
called with it. Every other balancer is called as ``choose(endpoints)`` and costs nothing more.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from sofamesh.core.endpoint import Endpoint


class LoadBalancer(ABC):
    """Chooses one endpoint among the ones it is given. Called per request: keep it allocation-free."""

    needs_hash: ClassVar[bool] = False
    """True for balancers that choose by the request's hash: ``choose`` then gets ``hash`` (None when
    the route has no hash policy or the policy found nothing to hash, as Envoy picks at random then)."""

    picks_sole_endpoint: ClassVar[bool] = False
    """True for balancers whose ``choose`` of a single endpoint returns it and changes nothing (no
    refusal, no state): a cluster with one endpoint to choose from (most sidecar clusters) then takes
    it without calling ``choose``. False by default: a balancer that may refuse keeps being asked.

    .. versionadded:: 0.7"""

    @abstractmethod
    def choose(self, endpoints: Sequence[Endpoint], hash: int | None = None) -> Endpoint | None:
        """One of ``endpoints`` (never empty when called), or None to refuse. ``hash`` is given only
        to balancers with ``needs_hash``: a 64-bit unsigned hash of the request, or None."""

    def endpoints_changed(self, endpoints: Sequence[Endpoint]) -> None:  # noqa: B027 (optional)
        """The cluster's endpoints, their weights or their health changed (an update, an ejection, a
        health check). Called at those moments, never per request; balancers that precompute a table
        (ring hash, Maglev) or track slow start drop what they kept."""


class LoadBalancerFactory(ABC):
    @abstractmethod
    def create(self, config: Mapping[str, Any] | None = None) -> LoadBalancer:
        """A balancer for one cluster. ``config`` is the cluster's ``lb_config`` (None or empty when
        not given); a factory that takes settings validates them and raises ``ConfigError`` (its path
        relative to ``lb_config``) or ``ValueError`` naming what is wrong. A factory written before
        ``config`` existed (``create(self)``) is called without it when the cluster gives none.

        .. versionchanged:: 0.2 ``config``.
        """


__all__ = ["LoadBalancer", "LoadBalancerFactory"]
