from metrobus_app import busdriver


@busdriver()
def route(record: dict) -> list[str]:
    return ["AddEmail", "Log"] if record.get("message_type_code") == "AUDIT" else ["AddEmail", "WhiteList", "Log"]
