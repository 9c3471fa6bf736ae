faust -A metrobus_app reconcile            # exit 1 while a pushed message has no fate
faust -A metrobus_app reconcile --wait 60 --json
