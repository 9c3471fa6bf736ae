"""The two caches of the seed: account -> email, and the email whitelist."""

from metrobus_app import bus

emails = bus.cache("emails", help="account number -> email address")
whitelist = bus.cache("whitelist", help="whitelisted email -> '1'")
