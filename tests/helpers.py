"""Test helpers that replay what Airflow itself does, without a database."""

from __future__ import annotations

import importlib
from typing import Any


def rehydrate(trigger: Any) -> Any:
    """Serialize a trigger, encrypt/decrypt its kwargs and rebuild it exactly as a triggerer does after a
    restart; a trigger that survives this survives a triggerer restart."""
    from airflow.models.trigger import Trigger

    try:
        from airflow.serialization.decoders import smart_decode_trigger_kwargs
    except ImportError:  # Airflow < 3.2
        from airflow.serialization.serialized_objects import smart_decode_trigger_kwargs

    classpath, kwargs = trigger.serialize()
    decrypted = Trigger._decrypt_kwargs(Trigger.encrypt_kwargs(kwargs))
    decoded = {key: smart_decode_trigger_kwargs(value) for key, value in decrypted.items()}
    module, _, name = classpath.rpartition(".")
    return getattr(importlib.import_module(module), name)(**decoded)


async def first_event(trigger: Any) -> dict[str, Any]:
    """Drive ``run()`` like the triggerer: take the first event's payload."""
    events = trigger.run()
    try:
        event = await anext(events)
    finally:
        await events.aclose()
    payload: dict[str, Any] = event.payload
    return payload
