"""Sensors: wait for a run started elsewhere (poke, reschedule or deferrable)."""
