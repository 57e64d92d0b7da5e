"""Vendor-neutral building blocks: connections, HTTP, errors, run models and the polling core.

Everything here is written once and shared by the three vendors; a vendor module only adds
request building, response parsing and state mapping.
"""
