# An OTLP backend on this machine: Jaeger all-in-one takes OTLP/HTTP on 4318 and shows the
# traces at http://localhost:16686 (any OTLP collector on 4318 does as well).
docker run -d --name jaeger -p 4318:4318 -p 16686:16686 jaegertracing/all-in-one:1.62.0

pip install 'metrobus[tracing]'               # the OpenTelemetry SDK and its OTLP/HTTP exporter
export METROBUS_TRACING=on
export METROBUS_TRACE_SAMPLE_RATIO=1.0        # keep every new trace (0.1: one in ten)
export OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4318    # the exporter adds /v1/traces
export OTEL_SERVICE_NAME=metrobus
export OTEL_TRACES_EXPORTER=otlp              # or console (to stdout), or none
export OTEL_BSP_SCHEDULE_DELAY=1000           # ms between the exporter's batches (default 5000)
faust -A metrobus_app worker -l info
