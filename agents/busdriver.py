"""The busdriver: the one smart stop, it reads each raw record once and stamps its route.

The route comes from rules (``routes.toml`` beside this file, or the rules stored in the
bus, which take precedence): see ``metrobus_app/routing/rule_set.py`` and README, "Routing".
"""

from pathlib import Path

from agents.payloads import Record
from metrobus_app import Envelope, bus, busdriver
from metrobus_app.routing.language import compile_rules, load_file
from metrobus_app.routing.rule_set import RouteRules

RULES_FILE = Path(__file__).with_name("routes.toml")
rules = RouteRules.declare(bus, RULES_FILE)


@busdriver()
async def route(record: Record) -> tuple | Envelope:
    """The route of the first rule that matches the record, else the default route."""
    return await rules.route(record)


# The file's rules as the seed's table, message_type_code -> route, for code that routes
# without a bus (the benchmark's raw relay, the demo test's expectations).
_FILE = compile_rules(load_file(RULES_FILE))
DEFAULT_ROUTE = list(_FILE.default)
ROUTES = {
    rule["match"]["message_type_code"]: rule["route"]
    for rule in _FILE.document["rules"]
    if set(rule["match"]) == {"message_type_code"} and isinstance(rule["match"]["message_type_code"], str)
}
