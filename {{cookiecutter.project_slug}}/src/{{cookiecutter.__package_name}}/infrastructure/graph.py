"""A graph in FalkorDB: who follows whom, and whom to suggest next.

Small on purpose: it shows how to open the client, write with parameters (never string
formatting), read rows back as plain Python values, and keep graph queries in one module.
"""

from typing import Any

from falkordb.asyncio import FalkorDB
from redis.asyncio import ConnectionPool
from redis.exceptions import ResponseError

from ..settings import Settings

EMPTY_GRAPH = "empty key"
FOLLOW = """
MERGE (a:User {name: $follower})
MERGE (b:User {name: $followee})
MERGE (a)-[:FOLLOWS]->(b)
"""
FOLLOWING = """
MATCH (:User {name: $name})-[:FOLLOWS]->(b:User)
RETURN b.name ORDER BY b.name
"""
# People followed by the people `name` follows, that `name` does not follow yet, most shared first.
SUGGESTIONS = """
MATCH (me:User {name: $name})-[:FOLLOWS]->(friend:User)-[:FOLLOWS]->(s:User)
WHERE s <> me AND NOT (me)-[:FOLLOWS]->(s)
RETURN s.name, count(DISTINCT friend) AS shared ORDER BY shared DESC, s.name LIMIT $limit
"""


def create_graph_client(settings: Settings) -> FalkorDB:
    """A FalkorDB client on the server of `REDIS_URL`, with the same pool size and timeouts.

    The client asks the server once, synchronously, whether it is a cluster: create it once at
    start-up (or in a worker's `on_startup`), never per request.
    """
    pool = ConnectionPool.from_url(
        str(settings.redis_url),
        max_connections=settings.redis_max_connections,
        socket_connect_timeout=settings.redis_connect_timeout_s,
        socket_timeout=settings.redis_socket_timeout_s,
        decode_responses=True,
    )
    return FalkorDB(connection_pool=pool)


async def close_graph_client(client: FalkorDB) -> None:
    await client.connection.aclose(close_connection_pool=True)


class SocialGraph:
    """Users and the FOLLOWS edges between them, in the graph named `name`."""

    def __init__(self, client: FalkorDB, name: str = "social") -> None:
        self._graph = client.select_graph(name)

    async def follow(self, follower: str, followee: str) -> None:
        await self._graph.query(FOLLOW, {"follower": follower, "followee": followee})

    async def following(self, name: str) -> list[str]:
        rows = await self._rows(FOLLOWING, {"name": name})
        return [str(row[0]) for row in rows]

    async def suggestions(self, name: str, limit: int = 5) -> list[tuple[str, int]]:
        """Friends of friends not yet followed, with how many followed users lead to each."""
        rows = await self._rows(SUGGESTIONS, {"name": name, "limit": limit})
        return [(str(row[0]), int(row[1])) for row in rows]

    async def delete(self) -> None:
        """Drop the whole graph (tests and resets)."""
        await self._graph.delete()

    async def _rows(self, query: str, params: dict[str, Any]) -> list[list[Any]]:
        try:
            result = await self._graph.ro_query(query, params)
        except ResponseError as exc:
            if EMPTY_GRAPH in str(exc):  # nothing written to this graph yet
                return []
            raise
        rows: list[list[Any]] = result.result_set
        return rows
