"""Tracing without a collector: the spans of a two-stop route, kept in memory by the SDK."""

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from metrobus_app import bus, busdriver, stop
from metrobus_app.observe.tracing import Tracing

# What METROBUS_TRACING=on does in a worker, with an exporter that keeps the spans here.
exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
bus.tracing = Tracing(provider.get_tracer("metrobus"), bus.settings.app_id)


@busdriver()
def route(record: dict) -> list[str]:
    return ["Validate", "Store"]


@stop("Validate")
def validate(order: dict) -> dict:
    return {**order, "valid": True}


@stop("Store")
def store(order: dict) -> dict:
    return order


def show(spans) -> str:
    """The spans as a tree, each under its parent: name, kind, outcome (and next stop)."""
    children: dict[int | None, list] = {}
    for span in sorted(spans, key=lambda span: span.start_time):
        children.setdefault(span.parent.span_id if span.parent else None, []).append(span)
    lines: list[str] = []

    def walk(parent: int | None, depth: int) -> None:
        for span in children.get(parent, []):
            said = span.attributes
            went = f" -> {said['metrobus.next_stop']}" if "metrobus.next_stop" in said else ""
            lines.append(f"{'  ' * depth}{span.name} ({span.kind.name.lower()}): {said['metrobus.outcome']}{went}")
            walk(span.context.span_id, depth + 1)

    walk(None, 0)
    return "\n".join(lines)
