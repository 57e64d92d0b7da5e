"""Sans-I/O vendor modules: specs, pydantic payload models, request builders and state mapping.

Nothing here performs I/O; hooks run these calls with the blocking or the asyncio client.
"""
