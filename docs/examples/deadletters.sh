faust -A metrobus_app deadletters list                     # stop, error, count, replayable
faust -A metrobus_app deadletters list --stop AddEmail --show
faust -A metrobus_app deadletters replay --stop AddEmail --error KeyError   # after the fix
faust -A metrobus_app deadletters replay --ids 5f0c...,9a1b... --dry-run
