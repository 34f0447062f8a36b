"""Load balancer contract. Implementations are plugins (``round_robin``, ``random``)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sofamesh.core.endpoint import Endpoint


class LoadBalancer(ABC):
    """Chooses one endpoint among the healthy ones. Called per request: keep it allocation-free."""

    @abstractmethod
    def choose(self, endpoints: Sequence[Endpoint]) -> Endpoint | None:
        """One of ``endpoints`` (never empty when called), or None to refuse."""


class LoadBalancerFactory(ABC):
    @abstractmethod
    def create(self) -> LoadBalancer:
        """A balancer for one cluster."""


__all__ = ["LoadBalancer", "LoadBalancerFactory"]
