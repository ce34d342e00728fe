"""The asyncio shell: feeds events to the pure core and carries out its effects."""
