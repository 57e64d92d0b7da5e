"""Triggers: poll a run on the triggerer with the shared polling core."""
