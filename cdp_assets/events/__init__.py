"""Events: validate every raw record into its public table or into `cdp.quarantine` with its reasons."""
