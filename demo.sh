#!/usr/bin/env bash
# Run the demo bus on this machine: installs what it needs, then broker, caches, worker, pusher.
# The broker is Tansu (embedded); ./demo.sh --broker kafka runs Apache Kafka instead (needs java, mvn).
source "$(dirname "$0")/scripts/bootstrap.sh"
exec .venv/bin/python scripts/demo.py "$@"
