"""What a triggerer does to a trigger after a restart, replayed without a database.

Its own module, importing nothing of the provider at import time, so that the benchmarks can use it when they run
another commit's package (``--src``), whose modules may not be the ones tests/helpers.py imports."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def rehydrate(trigger: Any) -> Any:
    """Serialize a trigger, encrypt/decrypt its kwargs and rebuild it exactly as a triggerer does after a
    restart; a trigger that survives this survives a triggerer restart."""
    from airflow.models.trigger import Trigger

    try:
        from airflow.serialization.decoders import smart_decode_trigger_kwargs
    except ImportError:  # Airflow < 3.2 (mypy checks against the newest Airflow, where the old home is gone)
        from airflow.serialization.serialized_objects import (  # type: ignore[attr-defined,no-redef,unused-ignore]
            smart_decode_trigger_kwargs,
        )

    classpath, kwargs = trigger.serialize()
    decrypted = Trigger._decrypt_kwargs(Trigger.encrypt_kwargs(kwargs))
    decode: Callable[[Any], Any] = smart_decode_trigger_kwargs  # Airflow leaves it unannotated
    decoded = {key: decode(value) for key, value in decrypted.items()}
    module, _, name = classpath.rpartition(".")
    return getattr(importlib.import_module(module), name)(**decoded)
