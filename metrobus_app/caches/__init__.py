"""Lookup caches every worker holds whole: the cache, its loader from the changelog, warming."""
