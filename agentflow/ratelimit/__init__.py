"""Queue limits that hold across every worker (Redis) or inside one process (memory)."""
