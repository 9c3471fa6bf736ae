"""Who may do what: the broker credentials (TLS, SASL) and the web guard (admin token)."""
