"""Which driver errors count as a lost connection (the shared engine's one retry at open)."""

from __future__ import annotations

import asyncpg

from baton_nb.store._failures import connection_lost


def test_a_client_configuration_error_is_not_a_lost_connection() -> None:
    assert not connection_lost(asyncpg.ClientConfigurationError("bad ssl"))
    assert connection_lost(asyncpg.ConnectionDoesNotExistError("gone"))
    assert connection_lost(ConnectionResetError())
