"""The bus core: stops, the busdriver and forward(), loop guards, fan-out and route edits."""
