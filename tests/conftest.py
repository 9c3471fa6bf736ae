"""Shared test set-up: unit tests run the app on Faust's in-memory table store."""

import os

os.environ.setdefault("METROBUS_STORE", "memory://")
