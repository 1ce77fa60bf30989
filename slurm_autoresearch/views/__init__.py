"""The read side: status, watch, terminal views, exports and reports; only reads the ledger."""
