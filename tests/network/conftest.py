"""Fixtures of the networking tests: see tests/network/fixtures.py."""

from tests.network.fixtures import auth_proxy, mtls_emulator, pki, proxy, sigterm_interrupts, tls_emulator

__all__ = ["auth_proxy", "mtls_emulator", "pki", "proxy", "sigterm_interrupts", "tls_emulator"]
