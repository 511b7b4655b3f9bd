"""How a route reaches the services: one async dependency, no state of its own."""

from __future__ import annotations

from fastapi import Request

from embedgate.services import Services


async def service(request: Request) -> Services:
    """Async on purpose: a sync dependency would cost a thread-pool hop per request."""
    services: Services = request.app.state.embedgate
    return services
