from collections.abc import AsyncIterator

import pytest
from falkordb.asyncio import FalkorDB

from {{ cookiecutter.__package_name }}.infrastructure.graph import (
    SocialGraph,
    close_graph_client,
    create_graph_client,
)
from {{ cookiecutter.__package_name }}.settings import Settings


@pytest.fixture
async def graph(settings: Settings, redis: object) -> AsyncIterator[SocialGraph]:
    """A graph on the real FalkorDB server, emptied by the `redis` fixture's flush."""
    client: FalkorDB = create_graph_client(settings)
    yield SocialGraph(client, name="social-test")
    await close_graph_client(client)


async def test_follow_is_idempotent(graph: SocialGraph) -> None:
    """It stores each FOLLOWS edge once, however often it is written."""
    await graph.follow("ada", "grace")
    await graph.follow("ada", "grace")
    await graph.follow("ada", "alan")
    assert await graph.following("ada") == ["alan", "grace"]


async def test_suggestions_rank_friends_of_friends(graph: SocialGraph) -> None:
    """It suggests people followed by those you follow, most shared first, never yourself."""
    for follower, followee in [
        ("ada", "grace"),
        ("ada", "alan"),
        ("grace", "linus"),
        ("alan", "linus"),
        ("alan", "barbara"),
        ("alan", "ada"),
        ("grace", "alan"),
    ]:
        await graph.follow(follower, followee)
    assert await graph.suggestions("ada") == [("linus", 2), ("barbara", 1)]
    assert await graph.suggestions("ada", limit=1) == [("linus", 2)]


async def test_unknown_user_has_no_suggestions(graph: SocialGraph) -> None:
    """It answers an empty list, not an error, for a user it has never seen."""
    assert await graph.suggestions("nobody") == []
