"""milterd: the MTA-facing daemon (milter protocol, sessions, verdicts, CLI)."""
