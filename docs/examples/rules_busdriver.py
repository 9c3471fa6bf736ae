from pathlib import Path

from metrobus_app import bus, busdriver
from metrobus_app.routing.rule_set import RouteRules

rules = RouteRules.declare(bus, Path(__file__).with_name("routes.toml"))  # also adds the command and view


@busdriver()
async def route(record: dict):
    return await rules.route(record)
