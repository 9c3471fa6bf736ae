# Waits up to 0.5 s stay in place; a longer wait goes through the shortest delay topic at
# least as long: metrobus-retry-10s, metrobus-retry-60s or metrobus-retry-600s (the longest
# for any wait beyond it).
export METROBUS_APP_ID=metrobus
export METROBUS_RETRY_IN_PLACE_MAX_MS=500
export METROBUS_RETRY_DELAY_TIERS=10,60,600
faust -A metrobus_app worker -l info
