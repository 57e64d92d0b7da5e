"""Operators: start a run, wait for it (deferrable or not), hand the answer to XCom."""
