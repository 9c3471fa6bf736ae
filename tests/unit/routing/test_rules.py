"""Route rules: matching, validation with precise messages, edits, the file, and the stored rule set."""

from __future__ import annotations

import json

import pytest

from agents.busdriver import RULES_FILE
from metrobus_app import Settings, create_app
from metrobus_app.routing.language import (
    RuleError,
    RuleExists,
    RuleNotFound,
    compile_rules,
    describe,
    load_file,
    normalize,
    put_rule,
    remove_rule,
)
from metrobus_app.routing.rule_set import KEY, RouteRules

STOPS = {"AddEmail", "WhiteList", "Log", "Archive", "Review"}


def rule_set(*rules: dict, default: list | None = None) -> dict:
    return {"default": default or ["Log"], "rules": list(rules)}


def rule(name: str, match: dict, route: list) -> dict:
    return {"name": name, "match": match, "route": route}


def route_of(document: dict, record: dict) -> list:
    return list(compile_rules(document, STOPS).route_for(record))


# --- the repository's rules file -------------------------------------------------------------


def test_the_rules_file_gives_the_demo_routes():
    rules = compile_rules(load_file(RULES_FILE), STOPS)
    assert list(rules.route_for({"message_type_code": "AUDIT"})) == ["AddEmail", "Log"]
    assert list(rules.route_for({"message_type_code": "ALTABC"})) == ["AddEmail", "WhiteList", "Log"]
    assert list(rules.route_for({})) == ["AddEmail", "WhiteList", "Log"]
    assert rules.rule_for({"message_type_code": "AUDIT"}) == "audit"
    assert rules.rule_for({"message_type_code": "X"}) == "default"


# --- matching --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("condition", "matches", "misses"),
    [
        ("AUDIT", [{"f": "AUDIT"}], [{"f": "audit"}, {}, {"f": None}, {"f": ["AUDIT"]}]),
        ({"equals": 3}, [{"f": 3}, {"f": 3.0}], [{"f": "3"}, {"f": True}, {}]),
        ({"equals": True}, [{"f": True}], [{"f": 1}, {"f": "true"}]),
        ({"in": ["A", "B", 7]}, [{"f": "A"}, {"f": "B"}, {"f": 7}], [{"f": "C"}, {"f": [1]}, {"f": {}}, {}]),
        ({"in": [1]}, [{"f": 1}], [{"f": True}]),
        ({"in": [True]}, [{"f": True}], [{"f": 1}]),
        ({"exists": True}, [{"f": 0}, {"f": ""}, {"f": False}], [{}, {"f": None}]),
        ({"exists": False}, [{}, {"f": None}], [{"f": 0}]),
        ({"min": 100}, [{"f": 100}, {"f": 1e9}], [{"f": 99.9}, {"f": "500"}, {"f": True}, {}]),
        ({"max": 10}, [{"f": 10}, {"f": -5}], [{"f": 10.01}, {"f": None}]),
        ({"min": 1, "max": 2.5}, [{"f": 1}, {"f": 2.5}, {"f": 2}], [{"f": 0.99}, {"f": 2.51}]),
        ({"exists": True, "in": ["x"]}, [{"f": "x"}], [{"f": "y"}]),
    ],
)
def test_a_condition_matches_what_it_says_and_nothing_else(condition, matches, misses):
    document = rule_set(rule("r", {"f": condition}, ["Review"]))
    for record in matches:
        assert route_of(document, record) == ["Review"], record
    for record in misses:
        assert route_of(document, record) == ["Log"], record


def test_nested_fields_and_all_conditions_of_a_rule_must_hold():
    document = rule_set(rule("r", {"customer.country": "NL", "amount": {"min": 100}}, ["Review"]))
    assert route_of(document, {"customer": {"country": "NL"}, "amount": 150}) == ["Review"]
    assert route_of(document, {"customer": {"country": "NL"}, "amount": 50}) == ["Log"]
    assert route_of(document, {"customer": "NL", "amount": 150}) == ["Log"]
    assert route_of(document, {"amount": 150}) == ["Log"]


def test_the_first_matching_rule_wins_and_the_default_takes_the_rest():
    document = rule_set(
        rule("big", {"amount": {"min": 1000}}, ["Review", "Log"]),
        rule("audit", {"code": "AUDIT"}, ["AddEmail", "Log"]),
        default=["AddEmail", "WhiteList", "Log"],
    )
    assert route_of(document, {"amount": 5000, "code": "AUDIT"}) == ["Review", "Log"]
    assert route_of(document, {"amount": 5, "code": "AUDIT"}) == ["AddEmail", "Log"]
    assert route_of(document, {"amount": 5}) == ["AddEmail", "WhiteList", "Log"]
    assert compile_rules(document, STOPS).rule_for({"amount": 5000}) == "big"


def test_fan_out_steps_compile_to_tuples_and_are_written_a_plus_b():
    document = rule_set(rule("r", {"x": 1}, ["AddEmail", ["Log", "Archive"]]), default=["AddEmail", "Log+Archive"])
    rules = compile_rules(document, STOPS)
    assert rules.route_for({"x": 1}) == ("AddEmail", ("Log", "Archive"))
    assert rules.route_for({}) == ("AddEmail", ("Log", "Archive"))
    assert rules.document["rules"][0]["route"] == ["AddEmail", "Log+Archive"]
    assert describe(rules.document["rules"][0]) == "x = 1 -> AddEmail, Log+Archive"


# --- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("document", "says"),
    [
        (rule_set(rule("r", {"x": 1}, ["AddMail"])), "rule 'r': route names unknown stop 'AddMail' (known: AddEmail,"),
        (rule_set(rule("r", {"x": 1}, ["Log+Nope"])), "rule 'r': route names unknown stop 'Nope'"),
        (rule_set(default=["Nope"]), "the default route: route names unknown stop 'Nope'"),
        (rule_set(rule("r", {"x": 1}, [])), "rule 'r': route is empty"),
        (rule_set(rule("r", {"x": 1}, "Log")), "rule 'r': route is a list of steps, like"),
        (rule_set(rule("r", {"x": 1}, ["Log+"])), "rule 'r': step 1 of the route: a fan-out step names two or more"),
        (rule_set(rule("r", {"x": 1}, [["Log"], "Log+Log"])), "step 2 of the route: a fan-out step names a stop twice"),
        (rule_set(rule("r", {"x": 1}, [42])), "step 1 of the route: a route step is a stop name"),
        (rule_set(rule("r", {}, ["Log"])), "rule 'r': match is empty"),
        (rule_set(rule("r", "x=1", ["Log"])), "rule 'r': match is a table of field = condition"),
        (rule_set(rule("r", {"x": {"gte": 1}}, ["Log"])), "rule 'r': match.x: unknown condition 'gte' (use equals,"),
        (rule_set(rule("r", {"x": {}}, ["Log"])), "rule 'r': match.x: no condition"),
        (rule_set(rule("r", {"x": [1, 2]}, ["Log"])), "match.x: a list is not a value; to match one of several use"),
        (rule_set(rule("r", {"x": {"in": []}}, ["Log"])), "match.x.in: a non-empty list of values, got an empty list"),
        (rule_set(rule("r", {"x": {"in": "ab"}}, ["Log"])), "match.x.in: a non-empty list of values, got the string"),
        (rule_set(rule("r", {"x": {"min": "5"}}, ["Log"])), "match.x.min: a number, got the string '5'"),
        (rule_set(rule("r", {"x": {"max": True}}, ["Log"])), "match.x.max: a number, got the boolean true"),
        (rule_set(rule("r", {"x": {"min": 5, "max": 1}}, ["Log"])), "match.x: min 5 is above max 1: nothing can match"),
        (rule_set(rule("r", {"x": {"exists": "yes"}}, ["Log"])), "match.x.exists: true or false"),
        (rule_set(rule("r", {"x": {"exists": False, "equals": 1}}, ["Log"])), "exists = false cannot hold together"),
        (rule_set(rule("r", {"x": None}, ["Log"])), "got null (to match a missing field use exists = false)"),
        (rule_set(rule("r", {"a..b": 1}, ["Log"])), "match.a..b: a field is a name, or names joined by '.'"),
        (rule_set(rule("r", {"x": 1}, ["Log"]), rule("r", {"y": 1}, ["Log"])), "two rules are named 'r'"),
        (rule_set(rule("default", {"x": 1}, ["Log"])), "'default' names the default route, not a rule"),
        (rule_set(rule("no spaces", {"x": 1}, ["Log"])), "name 'no spaces' must be letters, digits"),
        (rule_set({"match": {"x": 1}, "route": ["Log"]}), "rule #1: no 'name'"),
        (rule_set({"name": "r", "route": ["Log"]}), "rule 'r': no 'match' (a rule that matches everything"),
        (rule_set({"name": "r", "match": {"x": 1}}), "rule 'r': no 'route'"),
        (rule_set({"name": "r", "match": {"x": 1}, "route": ["Log"], "when": 1}), "rule 'r': unknown key 'when'"),
        ({"rules": []}, "the rule set has no default route"),
        ({"default": ["Log"], "rule": []}, "unknown key 'rule' in the rule set (it has 'default' and 'rules')"),
        ({"default": ["Log"], "rules": {}}, "'rules' is a list of rules, got a table"),
        ([], "a rule set is an object with 'default' and 'rules', got a list"),
    ],
)
def test_an_invalid_rule_set_is_refused_saying_exactly_why(document, says):
    with pytest.raises(RuleError) as refused:
        compile_rules(document, STOPS)
    assert says in str(refused.value)


def test_without_known_stops_only_the_shape_is_checked():
    assert compile_rules(rule_set(default=["Anything"])).default == ("Anything",)


def test_normalize_keeps_a_description_and_drops_nothing_else():
    document = rule_set({**rule("r", {"x": 1}, ["Log"]), "description": "why"})
    assert normalize(document, STOPS)["rules"][0] == {
        "name": "r",
        "match": {"x": 1},
        "route": ["Log"],
        "description": "why",
    }


# --- files -----------------------------------------------------------------------------------


def test_a_toml_or_json_file_loads_and_a_broken_one_names_the_file(tmp_path):
    toml = tmp_path / "r.toml"
    toml.write_text(
        'default = ["Log"]\n[[rules]]\nname = "a"\nmatch = { x = { min = 1 } }\nroute = ["Review", "Log"]\n'
    )
    assert route_of(load_file(toml), {"x": 2}) == ["Review", "Log"]
    as_json = tmp_path / "r.json"
    as_json.write_text(json.dumps(rule_set(rule("a", {"x": 1}, ["Review"]))))
    assert route_of(load_file(as_json), {"x": 1}) == ["Review"]
    broken = tmp_path / "broken.toml"
    broken.write_text("default = [\n")
    with pytest.raises(RuleError, match=r"broken\.toml: not valid TOML"):
        load_file(broken)
    with pytest.raises(RuleError, match="cannot read rules file"):
        load_file(tmp_path / "missing.toml")


# --- edits -----------------------------------------------------------------------------------


def names(document: dict) -> list[str]:
    return [r["name"] for r in document["rules"]]


def test_put_rule_appends_replaces_in_place_or_puts_where_told():
    document = rule_set(rule("a", {"x": 1}, ["Log"]), rule("b", {"x": 2}, ["Log"]))
    assert names(put_rule(document, rule("c", {"x": 3}, ["Log"]))) == ["a", "b", "c"]
    replaced = put_rule(document, rule("a", {"x": 9}, ["Review"]))
    assert names(replaced) == ["a", "b"] and replaced["rules"][0]["match"] == {"x": 9}
    assert names(put_rule(document, rule("c", {"x": 3}, ["Log"]), position=1)) == ["c", "a", "b"]
    assert names(put_rule(document, rule("c", {"x": 3}, ["Log"]), before="b")) == ["a", "c", "b"]
    assert names(put_rule(document, rule("c", {"x": 3}, ["Log"]), after="b")) == ["a", "b", "c"]
    assert names(put_rule(document, rule("a", {"x": 1}, ["Log"]), after="b")) == ["b", "a"]
    assert names(document) == ["a", "b"]  # edits return a copy


def test_put_and_remove_refuse_what_cannot_be_done():
    document = rule_set(rule("a", {"x": 1}, ["Log"]))
    with pytest.raises(RuleExists, match="a rule named 'a' exists already"):
        put_rule(document, rule("a", {"x": 1}, ["Log"]), create=True)
    with pytest.raises(RuleNotFound, match="no rule named 'b'"):
        put_rule(document, rule("b", {"x": 1}, ["Log"]), create=False)
    with pytest.raises(RuleError, match=r"position 3 is outside 1\.\.2"):
        put_rule(document, rule("b", {"x": 1}, ["Log"]), position=3)
    with pytest.raises(RuleError, match="no rule named 'z' to put 'b' before"):
        put_rule(document, rule("b", {"x": 1}, ["Log"]), before="z")
    with pytest.raises(RuleError, match="one of position, before, after"):
        put_rule(document, rule("b", {"x": 1}, ["Log"]), before="a", position=1)
    with pytest.raises(RuleNotFound, match="no rule named 'b'"):
        remove_rule(document, "b")
    with pytest.raises(RuleError, match="the default route cannot be removed"):
        remove_rule(document, "default")
    assert names(remove_rule(document, "a")) == []


# --- the stored rule set, as a worker holds it ---------------------------------------------------


@pytest.fixture()
def stored(tmp_path):
    """RouteRules of a small bus, with an in-memory store written to directly (as the loader would)."""
    app = create_app(Settings(app_id="unit-rules", store="memory://"))
    for name in ("AddEmail", "Log", "Review"):
        app.bus.stop(name)(lambda payload: payload)
    file = tmp_path / "routes.toml"
    file.write_text('default = ["AddEmail", "Log"]\n')
    rules = RouteRules.declare(app.bus, file)
    store = rules.cache.open("memory://", tmp_path)
    rules.cache.ready.set()
    writes: list = []

    async def write(document):
        offset = store.offset + 1
        store.apply([(KEY, None if document is None else json.dumps(document).encode())], offset)
        writes.append(document)
        return offset

    rules.write = write
    rules.writes = writes
    return rules


async def test_nothing_stored_means_the_file_and_a_write_takes_effect_on_the_next_record(stored):
    assert list(await stored.route({"x": 1})) == ["AddEmail", "Log"]
    assert (stored.source, stored.revision) == ("file", 0)
    first = stored.active()
    assert stored.active() is first  # nothing changed: nothing compiled again

    editor = stored.editor(by="test")
    revision = await editor.put(rule("big", {"amount": {"min": 100}}, ["Review", "Log"]))
    assert revision == 1
    assert list(await stored.route({"amount": 500})) == ["Review", "Log"]
    assert list(await stored.route({"amount": 5})) == ["AddEmail", "Log"]  # the default came from the file
    assert (stored.source, stored.revision) == ("bus", 1)
    view = stored.view()
    assert view["rules"][0]["name"] == "big" and view["updated_by"] == "test" and view["source"] == "bus"

    await editor.remove("big")
    assert list(await stored.route({"amount": 500})) == ["AddEmail", "Log"]
    await editor.reset()
    assert stored.view()["source"] == "file"
    assert list(await stored.route({"amount": 500})) == ["AddEmail", "Log"]


async def test_an_invalid_change_writes_nothing_and_the_rules_stay(stored):
    editor = stored.editor(by="test")
    await editor.set_default(["Review"])
    with pytest.raises(RuleError, match="route names unknown stop 'Nope'"):
        await editor.put(rule("bad", {"x": 1}, ["Nope"]))
    with pytest.raises(RuleError, match="route is empty"):
        await editor.set_default([])
    with pytest.raises(RuleError, match="unknown condition 'like'"):
        await editor.load(rule_set(rule("r", {"x": {"like": "a%"}}, ["Log"])))
    assert len(stored.writes) == 1
    assert list(await stored.route({"x": 1})) == ["Review"]


async def test_a_stored_rule_set_this_worker_cannot_use_is_refused_and_the_old_one_stays(stored, caplog):
    await stored.editor(by="test").set_default(["Review"])
    assert list(await stored.route({})) == ["Review"]
    store = stored.cache.store
    store.apply([(KEY, json.dumps(rule_set(default=["NewStop"])).encode())], store.offset + 1)
    assert list(await stored.route({})) == ["Review"]
    assert "route names unknown stop 'NewStop'" in stored.view()["refused"]
    assert "stored revision 2 refused" in caplog.text


def test_a_rule_may_give_its_messages_a_deadline_and_a_bad_one_is_refused():
    rules = compile_rules(
        {
            "default": ["Log"],
            "rules": [{"name": "urgent", "match": {"priority": "high"}, "route": ["AddEmail"], "deadline_s": 2.5}],
        }
    )
    assert rules.first_match({"priority": "high"}).deadline_s == 2.5
    assert rules.first_match({"priority": "low"}) is None
    assert rules.route_for({"priority": "low"}) == ("Log",)
    for bad in (0, -1, "2", True, float("inf")):
        with pytest.raises(RuleError, match="'deadline_s' is a number of seconds above 0"):
            compile_rules(
                {"default": ["Log"], "rules": [{"name": "x", "match": {"a": 1}, "route": ["Log"], "deadline_s": bad}]}
            )
