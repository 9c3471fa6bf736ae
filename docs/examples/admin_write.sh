curl -X PUT -H "Authorization: Bearer $METROBUS_ADMIN_TOKEN" -H 'Content-Type: application/json' \
     -d '{"route": ["AddEmail", "Log"]}' http://127.0.0.1:6066/metrobus/routes/default
