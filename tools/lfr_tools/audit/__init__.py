"""Reading a unit's audit log after the fact: `lfr-audit verify` and `lfr-audit report`."""
