"""Hooks: one per vendor connection type, each with a blocking and an asyncio client."""
