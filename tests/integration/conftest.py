"""The real operator (kopf, handlers, queue, reconciler, API wrapper) against the emulator."""

from __future__ import annotations

from collections.abc import AsyncIterator

import kopf
import pytest_asyncio

from baseline_operator.demo.emulator import running_emulator
from baseline_operator.kube.client import KubeApi, RetryPolicy
from baseline_operator.kube.config import endpoint_for
from tests.support.cluster import Cluster, Operator, running_operator


@pytest_asyncio.fixture()
async def cluster() -> AsyncIterator[Cluster]:
    async with running_emulator() as (emulator, url):
        endpoint = endpoint_for(url)
        kube = KubeApi(endpoint, retry=RetryPolicy(first_delay=0.05, max_delay=0.5))
        yield Cluster(kube, lambda: kopf.ConnectionInfo(server=url), endpoint, emulator)
        await kube.close()


@pytest_asyncio.fixture()
async def operator(cluster: Cluster) -> AsyncIterator[Operator]:
    async with running_operator(cluster) as running:
        yield running
