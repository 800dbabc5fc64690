"""Pure decisions: phases, planning, matching, validation, access, checks, notices, reports (no I/O)."""
