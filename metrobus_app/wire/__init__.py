"""The wire format: the envelope and its header fields, route steps, outcomes, dead letters, topic names. No Faust."""
