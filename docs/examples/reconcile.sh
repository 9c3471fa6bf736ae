faust -A metrobus_app reconcile            # exit 1 while a pushed message has no fate
faust -A metrobus_app reconcile --wait 60 --json
faust -A metrobus_app reconcile --topics stops --wait 60   # and every stop topic as read_committed readers see it
